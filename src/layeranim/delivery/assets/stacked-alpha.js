/* layeranim stacked-alpha player: the project's own code, no third-party parts.
 *
 * A "stacked alpha" video holds straight colour in its top half and alpha as luma in its bottom half.
 * Each element with a `data-layeranim-stacked` attribute holds a hidden <video> of such a file and a
 * <canvas>; the canvas shows the colour with its alpha over whatever lies behind it on the page.
 * Each half is `videoHeight / 2` rows; the clip is its top-left `data-clip-width` × `data-clip-height`
 * (layeranim's mp4-stacked pads each half, with a black guard band between them, so the codec does not
 * smear colour into alpha). Without those attributes the clip is the whole half.
 *
 * Two renderers, the same result:
 * - WebGL: a fragment shader takes rgb from the top half and alpha from the bottom half's luma, and
 *   premultiplies at its output (the named boundary: the canvas context is premultiplied).
 * - An SVG filter on the <video> itself (feOffset moves the bottom half up, feColorMatrix turns its luma
 *   into alpha, feComposite "in" applies it). Browsers refuse WebGL access to a video the page's origin
 *   does not own, and a page opened from file:// owns none; the filter reads no pixels, so it works there.
 * The renderer used is written to the element's `data-renderer` attribute.
 *
 * An element may also hold a <video data-layeranim-webm> (VP9 alpha WebM): it is kept where the browser
 * plays WebM alpha (Chromium, Firefox) and the stacked player is used elsewhere (Safari/WebKit has no
 * VP9 alpha). `data-prefer="stacked"` on the element always uses the stacked player.
 */
(function () {
  "use strict";

  var FILTER_ID = "layeranim-unstack";
  var SVG_NS = "http://www.w3.org/2000/svg";

  var VERTEX_SHADER = [
    "attribute vec2 position;",
    "varying vec2 uv;",
    "void main() {",
    "  uv = vec2(0.5 + 0.5 * position.x, 0.5 - 0.5 * position.y);", // texture rows run top to bottom
    "  gl_Position = vec4(position, 0.0, 1.0);",
    "}"
  ].join("\n");

  var FRAGMENT_SHADER = [
    "precision mediump float;",
    "uniform sampler2D frame;",
    "uniform vec2 crop;", // the clip's share of the picture: (clip width / width, clip height / height)
    "varying vec2 uv;",
    "void main() {",
    "  vec2 at = uv * crop;",
    "  vec3 rgb = texture2D(frame, at).rgb;",
    "  float alpha = dot(texture2D(frame, at + vec2(0.0, 0.5)).rgb, vec3(0.299, 0.587, 0.114));",
    "  gl_FragColor = vec4(rgb * alpha, alpha);", // straight → premultiplied, for the canvas
    "}"
  ].join("\n");

  function ensureFilter() {
    if (document.getElementById(FILTER_ID)) return;
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("width", "0");
    svg.setAttribute("height", "0");
    svg.setAttribute("aria-hidden", "true");
    svg.style.position = "absolute";
    svg.innerHTML =
      '<filter id="' + FILTER_ID + '" x="0" y="0" width="1" height="1" ' +
      'color-interpolation-filters="sRGB" primitiveUnits="objectBoundingBox">' +
      '<feOffset in="SourceGraphic" dx="0" dy="-0.5" result="lower"/>' +
      '<feColorMatrix in="lower" type="matrix" result="mask" ' +
      'values="0 0 0 0 0  0 0 0 0 0  0 0 0 0 0  0.299 0.587 0.114 0 0"/>' +
      '<feComposite in="SourceGraphic" in2="mask" operator="in"/>' +
      "</filter>";
    document.body.appendChild(svg);
  }

  function compile(gl, type, source) {
    var shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
      throw new Error("layeranim: shader: " + gl.getShaderInfoLog(shader));
    }
    return shader;
  }

  function clipSize(root, video) {
    // The clip's size inside each half: the element's data-clip-width/-height, else the whole half.
    var width = parseInt(root.getAttribute("data-clip-width"), 10);
    var height = parseInt(root.getAttribute("data-clip-height"), 10);
    var half = Math.floor(video.videoHeight / 2);
    if (!(width > 0 && width <= video.videoWidth)) width = video.videoWidth;
    if (!(height > 0 && height <= half)) height = half;
    return {width: width, height: height};
  }

  function webglRenderer(root, video, canvas) {
    var gl = canvas.getContext("webgl", {alpha: true, premultipliedAlpha: true, preserveDrawingBuffer: true});
    if (!gl) return null;
    var program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(program);
    gl.useProgram(program);
    gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    var crop = gl.getUniformLocation(program, "crop");
    var position = gl.getAttribLocation(program, "position");
    gl.enableVertexAttribArray(position);
    gl.vertexAttribPointer(position, 2, gl.FLOAT, false, 0, 0);
    gl.bindTexture(gl.TEXTURE_2D, gl.createTexture());
    // Video sizes are rarely powers of two: WebGL 1 then needs clamping and no mipmaps.
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    return function draw() {
      var size = clipSize(root, video), width = size.width, height = size.height;
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
      }
      gl.viewport(0, 0, width, height);
      gl.uniform2f(crop, width / video.videoWidth, height / video.videoHeight);
      // Throws a SecurityError for a video the page's origin does not own (file:// pages).
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, video);
      gl.clearColor(0, 0, 0, 0);
      gl.clear(gl.COLOR_BUFFER_BIT);
      gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    };
  }

  function useFilter(root, video, canvas) {
    ensureFilter();
    var box = document.createElement("div");
    box.className = canvas.className;
    box.style.cssText = canvas.style.cssText;
    box.style.position = "relative";
    box.style.overflow = "hidden";
    var size = clipSize(root, video);
    box.style.aspectRatio = size.width + " / " + size.height;
    if (!box.style.width) box.style.width = size.width + "px";
    // The whole picture, scaled so that its clip fills the box (the rest is clipped by the box).
    var scaleX = (100 * video.videoWidth) / size.width, scaleY = (100 * video.videoHeight) / size.height;
    video.style.cssText = "position:absolute;left:0;top:0;width:" + scaleX + "%;height:" + scaleY + "%;" +
      "display:block;filter:url(#" + FILTER_ID + ")";
    video.hidden = false;
    canvas.parentNode.replaceChild(box, canvas);
    box.appendChild(video);
    root.setAttribute("data-renderer", "svg-filter");
  }

  function startStacked(root) {
    var video = root.querySelector("video[data-layeranim-stacked-video]");
    var canvas = root.querySelector("canvas");
    if (!video || !canvas) return;
    var draw = null;
    var decided = false;

    function frame() {
      if (video.readyState < 2) return;
      if (!decided) {
        decided = true;
        try {
          draw = webglRenderer(root, video, canvas);
          if (draw) {
            draw();
            root.setAttribute("data-renderer", "webgl");
          }
        } catch (error) {
          draw = null;
        }
        if (!draw) useFilter(root, video, canvas);
        return;
      }
      if (draw) draw();
    }

    // Redraw on every animation frame in which the video moved: a hidden video fires no
    // requestVideoFrameCallback in some browsers, and timeupdate comes only a few times a second.
    var shownTime = -1;
    function loop() {
      if (decided && !draw) return; // the SVG filter follows the video by itself
      if (video.currentTime !== shownTime || !decided) {
        shownTime = video.currentTime;
        frame();
      }
      window.requestAnimationFrame(loop);
    }

    ["loadeddata", "seeked", "timeupdate", "play"].forEach(function (name) {
      video.addEventListener(name, frame);
    });
    loop();
  }

  function playsWebmAlpha() {
    // WebKit (Safari, and every browser on iOS) reports this vendor and has no VP9 alpha.
    if (navigator.vendor === "Apple Computer, Inc.") return false;
    var probe = document.createElement("video");
    return probe.canPlayType('video/webm; codecs="vp9"') !== "";
  }

  function start(root) {
    var webm = root.querySelector("video[data-layeranim-webm]");
    if (webm) {
      var canvas = root.querySelector("canvas");
      if (root.getAttribute("data-prefer") !== "stacked" && playsWebmAlpha()) {
        var unused = root.querySelector("video[data-layeranim-stacked-video]");
        if (unused) unused.removeAttribute("src");
        root.setAttribute("data-renderer", "webm");
        return;
      }
      // Inline styles, not the hidden attribute: a page's CSS (display: block) would override that.
      webm.pause();
      webm.removeAttribute("src");
      webm.style.display = "none";
      if (canvas) canvas.style.display = "";
    }
    startStacked(root);
  }

  function startAll() {
    var roots = document.querySelectorAll("[data-layeranim-stacked]");
    for (var i = 0; i < roots.length; i++) start(roots[i]);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startAll);
  else startAll();
})();
