"""Models and weight loaders: LayerDiffuse transparency VAE parts and UNet weights."""

from layeranim.models.inter_frame_attention import FrameContext as FrameContext
from layeranim.models.inter_frame_attention import InterFrameAttnProcessor as InterFrameAttnProcessor
from layeranim.models.inter_frame_attention import ifa_parameters as ifa_parameters
from layeranim.models.inter_frame_attention import ifa_state_dict as ifa_state_dict
from layeranim.models.inter_frame_attention import (
    install_inter_frame_attention as install_inter_frame_attention,
)
from layeranim.models.inter_frame_attention import (
    inter_frame_attention_disabled as inter_frame_attention_disabled,
)
from layeranim.models.inter_frame_attention import load_ifa_weights as load_ifa_weights
from layeranim.models.inter_frame_attention import middle_frame_index as middle_frame_index
from layeranim.models.inter_frame_attention import save_ifa_weights as save_ifa_weights
from layeranim.models.inter_frame_attention import (
    set_inter_frame_attention_enabled as set_inter_frame_attention_enabled,
)
from layeranim.models.inter_frame_attention import (
    uninstall_inter_frame_attention as uninstall_inter_frame_attention,
)
from layeranim.models.layerdiffuse_unet import LayerDiffuseAttnProcessor as LayerDiffuseAttnProcessor
from layeranim.models.layerdiffuse_unet import apply_layerdiffuse_sd15 as apply_layerdiffuse_sd15
from layeranim.models.layerdiffuse_unet import apply_layerdiffuse_sdxl as apply_layerdiffuse_sdxl
from layeranim.models.layerdiffuse_unet import load_safetensors_file as load_safetensors_file
from layeranim.models.layerdiffuse_unet import reinstall_processors as reinstall_processors
from layeranim.models.layerdiffuse_unet import remove_processors as remove_processors
from layeranim.models.layerdiffuse_unet import sd15_attn_state_dict_shapes as sd15_attn_state_dict_shapes
from layeranim.models.layerdiffuse_unet import sdxl_attn_state_dict_shapes as sdxl_attn_state_dict_shapes
from layeranim.models.layerdiffuse_unet import spatial_attention_names as spatial_attention_names
from layeranim.models.transparent_vae import TransparentVAEDecoder as TransparentVAEDecoder
from layeranim.models.transparent_vae import TransparentVAEEncoder as TransparentVAEEncoder
from layeranim.models.transparent_vae import decode_rgba as decode_rgba
from layeranim.models.transparent_vae import encode_adjusted_latent as encode_adjusted_latent
from layeranim.models.transparent_vae import estimate_augmented as estimate_augmented
from layeranim.models.transparent_vae import estimate_single_pass as estimate_single_pass
from layeranim.models.transparent_vae import pad_rgb as pad_rgb
from layeranim.models.transparent_vae import rgba_to_uint8 as rgba_to_uint8
