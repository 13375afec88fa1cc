import pytest
import torch

from conftest import TINY_BACKBONE
from echo.backbones import BackboneRegistry, NCSNppDeform
from echo.backbones.ncsnpp_utils.deform_conv import ModulatedDeformConv2d

PLAIN_NCSNPP_PARAMS = 65_590_822   # SGMSE+'s NCSN++ at the paper configuration
DEFORM_EXTRA_PARAMS = 1_104        # offset + mask predictors: 3x3 stem 999, six 1x1 combiners 90, output 15


def count(net):
    return sum(p.numel() for p in net.parameters())


def test_registry_default():
    assert BackboneRegistry.get_by_name("ncsnpp_deform") is NCSNppDeform


def test_paper_size_parameter_counts():
    assert count(NCSNppDeform(deform=False)) == PLAIN_NCSNPP_PARAMS
    net = NCSNppDeform()
    assert count(net) == PLAIN_NCSNPP_PARAMS + DEFORM_EXTRA_PARAMS == 65_591_926
    deformable = [m for m in net.modules() if isinstance(m, ModulatedDeformConv2d)]
    assert len(deformable) == 8  # stem, six combiners, output layer


@pytest.mark.parametrize("ch_mult", [[1, 2], [1, 2, 2], [1, 1, 2, 2, 2]])
def test_shapes_for_several_depths(ch_mult):
    net = NCSNppDeform(nf=8, ch_mult=ch_mult, num_res_blocks=1, attn_resolutions=[64])
    factor = 2 ** (len(ch_mult) - 1)
    assert net.downsampling_factor == factor
    x = torch.randn(2, 2, 256, 2 * factor, dtype=torch.complex64)
    out = net(x, torch.tensor([0.1, 0.9]))
    assert out.shape == (2, 1, 256, 2 * factor) and out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()


def test_attention_is_used_at_its_level():
    net = NCSNppDeform(nf=8, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[64])
    assert net.attn_levels == [False, False, True]


def test_frames_not_divisible_is_explained():
    net = NCSNppDeform(**TINY_BACKBONE)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.zeros(1, 2, 256, 12, dtype=torch.complex64), torch.ones(1))


def test_output_layer_starts_near_zero():
    torch.manual_seed(0)
    net = NCSNppDeform(**TINY_BACKBONE)
    out = net(torch.randn(1, 2, 256, 16, dtype=torch.complex64), torch.tensor([0.5]))
    assert out.abs().max() < 1e-3


def test_scale_by_sigma_divides_by_t():
    torch.manual_seed(0)
    net = NCSNppDeform(**TINY_BACKBONE, deform=False)
    with torch.no_grad():  # make the output layer see the pyramid linearly
        net.output_layer.weight.fill_(0.1)
        net.output_layer.bias.zero_()
    x = torch.randn(1, 2, 256, 16, dtype=torch.complex64)
    t = torch.tensor([0.5])
    a = net(x, t)
    net.scale_by_sigma = False
    b = net(x, t)
    assert torch.allclose(a, b / 0.5, rtol=1e-4, atol=1e-6)


def test_gradients_reach_every_trainable_parameter():
    torch.manual_seed(0)
    net = NCSNppDeform(nf=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[128])
    out = net(torch.randn(2, 2, 256, 8, dtype=torch.complex64), torch.tensor([0.3, 0.7]))
    out.abs().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
