"""The FID InceptionV3: loads self-made weights in the standard file format, rejects wrong files clearly."""
from __future__ import annotations

import pytest
import torch

from cdrl.metrics import inception
from cdrl.metrics.features import build_extractor
from cdrl.metrics.inception import WEIGHTS_FILE, FIDInceptionV3, InceptionWeightsError, _tf_avg_pool


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Random weights saved as the standard file is: a plain state dict, torchvision Inception3 key names."""
    torch.manual_seed(0)
    network = FIDInceptionV3()
    state = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_FILE
    torch.save(state, path)
    return path, state


def test_state_dict_has_the_standard_names_and_shapes(weights_file):
    _, state = weights_file
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3), "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3), "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3), "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1), "fc.weight": (1008, 2048), "fc.bias": (1008,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    assert all(not k.endswith(".bias") or k.startswith("fc.") or ".bn." in k for k in state)  # convs have no bias


def test_loads_weights_and_gives_pool3_features(weights_file, monkeypatch):
    path, state = weights_file
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(path))  # found through $CDRL_INCEPTION_WEIGHTS
    extractor = build_extractor("inception")
    assert (extractor.name, extractor.dim, extractor.weights_path) == ("inception", 2048, path)
    torch.testing.assert_close(extractor.network.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    seen = []
    extractor.network.Conv2d_1a_3x3.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    grey = torch.rand(1, 1, 8, 8) * 2 - 1
    features = extractor(grey)  # one image: the 299×299 forward costs ~0.1-0.2 s per image on a free core
    assert features.shape == (1, 2048) and features.dtype == torch.float32 and torch.isfinite(features).all()
    # Grey → 3 equal channels; [-1, 1] → [0, 1] → bilinear 299×299 (align_corners=False) → 2x − 1.
    resized = torch.nn.functional.interpolate(grey.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear",
                                              align_corners=False)
    torch.testing.assert_close(seen[0], resized)


def test_missing_weights_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as caught:
        build_extractor("inception")
    message = str(caught.value)
    assert WEIGHTS_FILE in message and str(tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_FILE) in message
    assert "eval.inception_weights" in message and inception.WEIGHTS_ENV in message
    with pytest.raises(FileNotFoundError, match="from eval.inception_weights"):
        build_extractor("inception", inception_weights=str(tmp_path / "nowhere.pth"))


def test_wrong_files_are_rejected_clearly(weights_file, tmp_path):
    _, state = weights_file
    wrong_shape = dict(state, **{"fc.weight": torch.zeros(1000, 2048)})
    torch.save(wrong_shape, tmp_path / "shape.pth")
    with pytest.raises(InceptionWeightsError, match=r"fc.weight has shape \(1000, 2048\).*\(1008, 2048\)"):
        build_extractor("inception", inception_weights=str(tmp_path / "shape.pth"))
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(InceptionWeightsError, match="other.pth: not the FID Inception weights"):
        build_extractor("inception", inception_weights=str(tmp_path / "other.pth"))
    (tmp_path / "text.pth").write_text("not a tensor file")
    with pytest.raises(InceptionWeightsError, match="text.pth: not a readable PyTorch state dict"):
        build_extractor("inception", inception_weights=str(tmp_path / "text.pth"))


def test_average_pools_ignore_padding_like_tensorflow():
    ones = torch.ones(1, 1, 4, 4)
    torch.testing.assert_close(_tf_avg_pool(ones), ones)  # corners average 4 real values, not 9 with zeros
