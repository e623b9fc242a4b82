"""The layer table: torchvision's published costs and the textbook bottleneck argument."""

import pytest

from resnet_jax import create_model
from resnet_jax.models import BasicBlock, Bottleneck
from resnet_jax.models.layer_table import main, summarize


@pytest.mark.parametrize("name,size,gmacs,rel", [
    ("resnet18", 224, 1.814, 0.01),  # torchvision's model table
    ("resnet50", 224, 4.089, 0.01),
    ("resnet20", 32, 0.041, 0.02),  # "about 41 M" (He et al.)
])
def test_total_macs_match_published_figures(name, size, gmacs, rel):
    summary = summarize(create_model(name), (size, size, 3))
    assert summary.total_macs / 1e9 == pytest.approx(gmacs, rel=rel)


def test_rows_give_paths_shapes_and_params():
    summary = summarize(create_model("resnet18"), (224, 224, 3))
    rows = {layer.path: layer for layer in summary.layers}
    assert rows["conv1"].output_shape == (112, 112, 64)
    assert rows["conv1"].params == 7 * 7 * 3 * 64
    assert rows["layer4_1/conv2"].output_shape == (7, 7, 512)
    assert rows["fc"].params == 512 * 1000 + 1000
    assert sum(layer.params for layer in summary.layers) == summary.total_params == 11_689_512


def conv_weights(summary):
    return sum(layer.params for layer in summary.layers if layer.kind == "Conv")


def test_bottleneck_holds_seventeen_times_fewer_weights_than_two_3x3_convs():
    x = (1, 14, 14, 256)
    assert conv_weights(summarize(BasicBlock(256), x)) == 1_179_648
    assert conv_weights(summarize(Bottleneck(64), x)) == 69_632


def test_command_line_prints_the_table(capsys):
    main(["resnet20", "--input-size", "32"])
    out = capsys.readouterr().out
    assert "layer3_2/conv2" in out and "(8, 8, 64)" in out
    assert "total params: 269,722" in out


@pytest.mark.parametrize("model,size,stride", [("resnet20", "0", 4), ("resnet20", "-3", 4),
                                               ("resnet50", "16", 32)])
def test_command_line_refuses_an_input_size_below_the_total_stride(model, size, stride):
    with pytest.raises(SystemExit, match=f"--input-size must be at least {model}'s total stride "
                       f"of {stride} pixels .*, got {size}"):
        main([model, "--input-size", size])


def test_summarize_refuses_empty_shapes():
    with pytest.raises(ValueError, match=r"positive sizes, got \(1, 0, 0, 3\)"):
        summarize(create_model("resnet20"), (0, 0, 3))
