/* layeranim preview page: the project's own code, no third-party parts.
 *
 * Each <figure class="clip"> holds one <video> inside a stage. The stage's class picks what lies
 * behind the clip: a checkerboard, a solid colour, or nothing in the alpha-only view, where an SVG
 * filter shows alpha as gray. Stacked-alpha MP4s are unstacked by an SVG filter too. Filters and CSS
 * read no pixels, so the page works opened from disk (file://), where scripts may not read videos.
 */
(function () {
  "use strict";

  function setView(card, view, color) {
    var stage = card.querySelector(".stage");
    stage.classList.remove("view-checker", "view-color", "view-alpha");
    stage.classList.add("view-" + view);
    stage.style.backgroundColor = view === "color" ? color : "";
    var buttons = card.querySelectorAll("[data-view]");
    for (var i = 0; i < buttons.length; i++) {
      var same = buttons[i].getAttribute("data-view") === view &&
        (view !== "color" || buttons[i].getAttribute("data-color") === color);
      buttons[i].setAttribute("aria-pressed", same ? "true" : "false");
    }
  }

  function setup(card) {
    var video = card.querySelector("video");
    var fps = parseFloat(card.getAttribute("data-fps")) || 24;
    var frames = parseInt(card.getAttribute("data-frames"), 10) || 1;
    var range = card.querySelector("input[type=range]");
    var label = card.querySelector(".frame-label");
    var play = card.querySelector("[data-action=play]");

    function current() {
      return Math.max(0, Math.min(frames - 1, Math.floor(video.currentTime * fps + 1e-3)));
    }
    function show() {
      var index = current();
      range.value = String(index);
      label.textContent = "frame " + (index + 1) + " / " + frames;
      play.textContent = video.paused ? "Play" : "Pause";
    }
    function seek(index) {
      index = Math.max(0, Math.min(frames - 1, index));
      video.pause();
      video.currentTime = (index + 0.5) / fps; // the middle of the frame: no rounding onto its neighbour
    }

    play.addEventListener("click", function () {
      if (video.paused) video.play(); else video.pause();
    });
    card.querySelector("[data-action=prev]").addEventListener("click", function () { seek(current() - 1); });
    card.querySelector("[data-action=next]").addEventListener("click", function () { seek(current() + 1); });
    range.addEventListener("input", function () { seek(parseInt(range.value, 10)); });
    ["timeupdate", "seeked", "play", "pause", "loadeddata"].forEach(function (name) {
      video.addEventListener(name, show);
    });
    var views = card.querySelectorAll("[data-view]");
    for (var i = 0; i < views.length; i++) {
      views[i].addEventListener("click", function (event) {
        var button = event.currentTarget;
        setView(card, button.getAttribute("data-view"), button.getAttribute("data-color"));
      });
    }
    show();
  }

  function setupAll() {
    var cards = document.querySelectorAll("figure.clip");
    for (var i = 0; i < cards.length; i++) setup(cards[i]);
    // A link may choose the view: page.html#view=alpha, #view=checker or #view=color:%23ff00ff.
    var chosen = /view=(checker|alpha|color:([^&]+))/.exec(window.location.hash);
    if (chosen) {
      var view = chosen[1].indexOf("color:") === 0 ? "color" : chosen[1];
      for (var c = 0; c < cards.length; c++) setView(cards[c], view, chosen[2] ? decodeURIComponent(chosen[2]) : null);
    }
    var global = document.querySelectorAll("[data-all-view]");
    for (var j = 0; j < global.length; j++) {
      global[j].addEventListener("click", function (event) {
        var button = event.currentTarget;
        for (var k = 0; k < cards.length; k++) {
          setView(cards[k], button.getAttribute("data-all-view"), button.getAttribute("data-color"));
        }
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setupAll);
  else setupAll();
})();
