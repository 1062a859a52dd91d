"""torchvision and timm classification models by name (``--model torchvision:resnet18``, ``--model
timm:resnet18``; timm is the optional extra ``mmix-eval[timm]``), adapted to the data.

Random initialisation (no download): the head gets the data's class count, the first convolution the
data's channel count; normalisation is prepended so the model takes [0, 1] images like every other.
Mixing layers are given by module name relative to the torchvision network ('' = input, 'layer1', ...);
ResNet-style networks also accept stage numbers (1 = 'layer1', 2 = 'layer2', ...).
"""

from __future__ import annotations

from torch import nn

from mmix_eval.errors import UserError, unknown
from mmix_eval.models.base import Normalize


class TorchvisionNet(nn.Module):
    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        stages = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(net, n)]
        self.stage_names = stages or None

    @property
    def mix_root(self) -> nn.Module:
        return self.net

    def forward(self, x):
        return self.net(self.normalize(x))


def _replace_first_conv(net: nn.Module, in_channels: int) -> None:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            setattr(
                parent,
                name.rsplit(".", 1)[-1],
                nn.Conv2d(
                    in_channels,
                    module.out_channels,
                    module.kernel_size,
                    module.stride,
                    module.padding,
                    module.dilation,
                    module.groups,
                    module.bias is not None,
                    module.padding_mode,
                ),
            )
            return


def check_arch(arch: str) -> str:
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm)
    if arch not in available:
        raise unknown("torchvision model", arch, available)
    return arch


def torchvision_model(arch: str, num_classes: int, in_channels: int, mean, std, **kwargs) -> TorchvisionNet:
    import torchvision.models as tvm

    net = tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        _replace_first_conv(net, in_channels)
    return TorchvisionNet(net, mean, std)


def check_timm_arch(arch: str) -> str:
    try:
        import timm
    except ImportError:
        raise UserError(
            f"model 'timm:{arch}': expected the timm package, which is not installed; pip install 'mmix-eval[timm]'"
        ) from None
    available = timm.list_models()
    if arch not in available:
        raise unknown("timm model", arch, available)
    return arch


def timm_model(arch: str, num_classes: int, in_channels: int, mean, std, **kwargs) -> TorchvisionNet:
    """A timm model, randomly initialised (pretrained weights are never downloaded), for the data's classes and
    channels, with the data's normalisation prepended."""
    import timm

    net = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    return TorchvisionNet(net, mean, std)
