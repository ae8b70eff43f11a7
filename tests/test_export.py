"""ONNX export of every registered model, checked against the eager model with onnxruntime."""

import pytest
import torch
from small_models import H, T, W, small_kwargs, small_model
from torch import nn

from stgraph.export import check_onnx, export_onnx, onnx_session, run_onnx
from stgraph.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_onnx_embedding_equals_eager(name, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed "
                        "(pip install 'stgraph[export]')")
    model = small_model(name, num_classes=5).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = export_onnx(model, tmp_path / f"{name}.onnx", height=H, width=W, seq_len=T)
    session = onnx_session(path)
    inputs = [i.name for i in session.get_inputs()]
    assert inputs == (["clips", "keypoints"] if name == "ctl" else ["clips"])
    shape = session.get_inputs()[0].shape
    assert shape[1:] == [T, 3, H, W] and not isinstance(shape[0], int)  # dynamic batch
    worst = check_onnx(model, path, height=H, width=W, seq_len=T, batches=(2, 3))
    print(f"{name}: max |onnx - eager| = {worst:.3g}")
    assert worst < 1e-4
    # the model is untouched (eval mode, same weights)
    assert not model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_onnx_graph_of_batch_3_row_by_row(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    torch.manual_seed(0)
    model = create_model("tp", num_classes=5, backbone="resnet18").eval()
    session = onnx_session(export_onnx(model, tmp_path / "tp.onnx", height=H, width=W,
                                       seq_len=T))
    clips = torch.randn(3, T, 3, H, W)
    out = run_onnx(session, clips)
    assert out.shape == (3, 512)
    with torch.no_grad():
        single = model(clips[1:2])["embedding"]
    torch.testing.assert_close(out[1:2], single, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="takes no keypoints"):
        run_onnx(session, clips, torch.zeros(3, T, 17, 3))


class _Kron(nn.Module):
    """A tiny model whose head uses aten::kron, which has no ONNX symbolic."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, clips):
        x = self.lin(clips.mean(dim=(1, 3, 4)))  # (B, 2)
        return {"embedding": torch.kron(x, torch.ones(1, 2))}


def test_unsupported_operator_names_model_and_operator(tmp_path):
    with pytest.raises(RuntimeError, match=r"cannot export model _Kron to ONNX \(opset 17\): "
                                           r"operator aten::kron is not supported"):
        export_onnx(_Kron(), tmp_path / "k.onnx", height=8, width=4, seq_len=2)


def test_bad_settings(tmp_path):
    model = create_model("stgcn", num_classes=5, **small_kwargs("stgcn"))
    with pytest.raises(ValueError, match=r"model stgcn \(STGCN\) was built for clips of "
                                         r"seq_len=4 frames, got seq_len=8"):
        export_onnx(model, tmp_path / "s.onnx", height=H, width=W, seq_len=8)
    pyg = create_model("stgcn", num_classes=5, backend="pyg", **small_kwargs("stgcn"))
    with pytest.raises(ValueError, match="uses backend='pyg'; the export takes the dense path"):
        export_onnx(pyg, tmp_path / "s.onnx", height=H, width=W, seq_len=T)
    with pytest.raises(ValueError, match="height must be an int >= 1"):
        export_onnx(model, tmp_path / "s.onnx", height=0, width=W, seq_len=T)
