"""Stage one (`LayerDiffusePipeline`) and stage two (`LayerAnimatePipeline`)."""

from layeranim.pipelines.layeranimate import LayerAnimatePipeline as LayerAnimatePipeline
from layeranim.pipelines.layeranimate import build_motion_unet as build_motion_unet
from layeranim.pipelines.layerdiffuse import LayerDiffusePipeline as LayerDiffusePipeline
