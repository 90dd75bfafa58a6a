"""Neural-network layers: the only package that imports `flax.linen` (a later migration touches one folder)."""

from gvlab.nn.conv import ConvDecoder as ConvDecoder
from gvlab.nn.conv import ConvEncoder as ConvEncoder
from gvlab.nn.conv import count_params as count_params
from gvlab.nn.lensnet import LensNet as LensNet
from gvlab.nn.mlp import MLP as MLP
from gvlab.nn.mlp import activation as activation
from gvlab.nn.time_mlp import TimeMLP as TimeMLP
from gvlab.nn.transformer import Transformer as Transformer
from gvlab.nn.transformer import TransformerConfig as TransformerConfig
from gvlab.nn.unet import UNet as UNet
