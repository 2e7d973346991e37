"""``python -m training ct`` end to end: labels1.csv + DICOM -> curriculum run -> a plugin model."""

import json

import numpy as np
import pytest
import torch

from napari_neuroseg.dataset import DatasetWriter, convert_ct_labels
from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.samples.ct import write_ct_series
from training.augment import ClassConditionalAugment
from training.cli import main
from training.tasks._common import DataError
from training.tasks.ct.data import CTSlices, model_input, prepare_slices

N_PATIENTS, N_SLICES = 4, 4
# The phantom's first and last slices hold 36 % brain, the others 38 %: 0.37 drops 2 each.
SMALL = ("image_size: 32\nhidden: 16\nstage_starts: [0, 1]\nmin_brain_fraction: 0.37\n"
         "milestone_every: 1\n")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    rows = ["patient_id,label"]
    for n in range(N_PATIENTS):
        write_ct_series(root / "CTs" / f"patient_{n:03d}", n_slices=N_SLICES, size=40,
                        spacing=(8.0, 5.0, 5.0), lesion=bool(n % 2), seed=n)
        rows.append(f"{n},{n % 2}")
    (root / "labels1.csv").write_text("\n".join(rows) + "\n")
    return convert_ct_labels(root / "labels1.csv", root / "CTs", root / "dataset").path


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """Two epochs, the curriculum's second stage starting at epoch 1."""
    root = tmp_path_factory.mktemp("ct_run")
    (root / "small.yaml").write_text(SMALL)
    run = root / "run"
    code = main(["ct", "--data", str(dataset), "--out", str(run), "--epochs", "2",
                 "--device", "cpu", "--config", str(root / "small.yaml"), "--seed", "0"])
    assert code == 0
    return run


def _sidecar_spec(run, name):
    return json.loads((run / "checkpoints" / f"{name}.json").read_text())["spec"]


def test_run_writes_patient_metrics_plots_and_a_plugin_checkpoint(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("patient_auc", "patient_f1", "patient_sensitivity", "patient_specificity",
                "patient_f1_at_0.5", "patient_sensitivity_at_0.5", "slice_auc", "threshold"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["train_patients"] == 2 and metrics["val_patients"] == 2
    assert metrics["tp"] + metrics["fn"] == 1 and metrics["tn"] + metrics["fp"] == 1
    assert metrics["dropped_slices"] == 2 * N_PATIENTS  # the quality filter at work
    assert metrics["train_slices"] + metrics["val_slices"] == (N_SLICES - 2) * N_PATIENTS
    for plot in ("history", "patient_probabilities", "confusion_matrix"):
        assert (trained / "plots" / f"{plot}.png").stat().st_size > 0
    assert "patient_f1" in (trained / "report.md").read_text()

    loaded = load_checkpoint(trained / "checkpoints" / "best")
    assert loaded.spec.name == "ct-metastasis" and loaded.spec.input.patch_size == (32, 32)
    assert loaded.spec.extra["min_brain_fraction"] == 0.37
    runner = ModelRunner(loaded.model, loaded.spec, device="cpu")
    probs = runner(np.full((2, 1, 32, 32), 35.0, np.float32))
    assert probs.shape == (2, 1) and np.all((probs >= 0) & (probs <= 1))


def test_the_plugin_classifies_a_series_with_the_trained_threshold(trained, dataset):
    from napari_neuroseg.analysis.volume import classify_slices
    from napari_neuroseg.io.dicom import read_dicom

    loaded = load_checkpoint(trained / "checkpoints" / "best")
    image = read_dicom(dataset.parent / "CTs" / "patient_001")[0]
    result = classify_slices(image, ModelRunner(loaded.model, loaded.spec, device="cpu"),
                             loaded.spec)
    assert result.probabilities.shape == (N_SLICES,)
    assert result.threshold == _sidecar_spec(trained, "best")["threshold"]


def test_checkpoints_store_the_threshold_their_epoch_chose(trained):
    history = json.loads((trained / "history.json").read_text())
    metrics = json.loads((trained / "metrics.json").read_text())
    best, last = (_sidecar_spec(trained, name)["threshold"] for name in ("best", "last"))
    assert best == history["threshold"][metrics["best_epoch"]] == metrics["threshold"]
    assert last == history["threshold"][-1]
    assert metrics["search"]["threshold"] == metrics["threshold"]  # searched on the same set
    assert best in np.round(np.arange(0.05, 1.0, 0.05), 6)


def test_curriculum_switches_stage_inside_the_run(trained):
    stages = json.loads((trained / "history.json").read_text())["curriculum"]
    assert [s["stage"] for s in stages] == [1, 2]
    assert stages[0]["lrs"] == {"classifier": 5e-5}
    assert stages[1]["lrs"] == {"classifier": 5e-5, "layer4": 1e-5}
    head = 2048 * 16 + 16 + 16 + 1
    assert stages[0]["trainable_params"] == head
    assert stages[1]["trainable_params"] > 10 * head


def test_evaluate_gives_patient_metrics_at_the_checkpoint_threshold(trained, dataset, tmp_path,
                                                                     capsys):
    checkpoint = trained / "checkpoints" / "best"
    capsys.readouterr()
    code = main(["evaluate", "--model", str(checkpoint), "--data", str(dataset),
                 "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["task"] == "ct" and metrics["items"] == N_PATIENTS * N_SLICES
    assert metrics["threshold"] == _sidecar_spec(trained, "best")["threshold"]
    assert metrics["patients"] == N_PATIENTS and metrics["slices_dropped"] == 2 * N_PATIENTS
    assert metrics["tp"] + metrics["fn"] == 2 and metrics["tn"] + metrics["fp"] == 2
    for key in ("patient_f1", "patient_sensitivity", "patient_specificity", "patient_auc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert 0.0 < metrics["search"]["threshold"] < 1.0
    assert json.loads(capsys.readouterr().out)["patient_f1"] == metrics["patient_f1"]


def _synthetic_ct(path, labels, split=None):
    slab = np.full((40, 40), -1000, np.int16)
    slab[4:36, 4:36], slab[8:32, 8:32] = 1000, 35
    with DatasetWriter(path, "ct", "CT", {0: "no metastasis", 1: "metastasis"}) as writer:
        for n, label in enumerate(labels):
            for k in range(2):
                writer.add(slab, label=label, patient_id=f"p{n}", spacing_mm=(5.0, 4.0, 4.0),
                           slice_index=k, split=(split or {}).get(label))
    return path


@pytest.mark.parametrize("labels, split", [
    ([0, 0, 0, 0], None),  # no positive patient at all
    ([0, 0, 1, 1], {1: "val"}),  # the positives are fixed on the validation side
])
def test_a_single_label_class_in_training_is_refused_before_training(tmp_path, labels, split):
    data = _synthetic_ct(tmp_path / "data", labels, split)
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"1 \(metastasis\) absent from the training split"):
        main(["ct", "--data", str(data), "--out", str(out), "--epochs", "1", "--device",
              "cpu"])
    assert not out.exists()


def test_augmentation_follows_the_patient_label(dataset):
    from napari_neuroseg.dataset import Dataset

    data = Dataset.open(dataset)
    spec = ModelRegistry().get("ct-metastasis")
    prepared = prepare_slices(data, [0, N_SLICES], spec, 0.0)  # patient 0 (neg), 1 (pos)
    labels = [int(item.label) for item in data.items]
    marks = ClassConditionalAugment(positive=lambda im, m, rng: (np.full_like(im, 0.75), m),
                                    negative=lambda im, m, rng: (np.full_like(im, 0.25), m))
    slices = CTSlices(prepared, labels, spec, marks)
    (neg, y_neg, i_neg), (pos, y_pos, i_pos) = slices[0], slices[1]
    assert (y_neg, i_neg, y_pos, i_pos) == (0.0, 0, 1.0, N_SLICES)
    assert torch.all(neg == 0.25) and torch.all(pos == 0.75) and neg.shape == (1, 256, 256)
    plain = CTSlices(prepared, labels, spec)[1][0]
    assert 0.0 <= float(plain.min()) and float(plain.max()) <= 1.0 and plain.std() > 0


def _backbone_state(model, rgb):
    """A torchvision-layout ResNet-50 state dict for ``model`` (random values, RGB stem)."""
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    state["conv1.weight"] = rgb
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    return state


def test_a_backbone_file_fills_the_backbone_only(tmp_path):
    from safetensors.torch import save_file

    from training.tasks.ct.backbone import load_pretrained_backbone

    model = ModelRegistry().build(ModelRegistry().get("ct-metastasis"))
    head = model.classifier[0].weight.clone()
    rgb = torch.randn(64, 3, 7, 7)
    state = _backbone_state(model, rgb)
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()},
              str(tmp_path / "radimagenet.safetensors"))
    summary = load_pretrained_backbone(model, tmp_path / "radimagenet.safetensors")
    assert "radimagenet.safetensors" in summary and "2 head tensors ignored" in summary
    assert torch.allclose(model.conv1.weight, rgb.sum(1, keepdim=True))  # grey = R + G + B
    assert torch.equal(model.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])
    assert torch.equal(model.classifier[0].weight, head)
    torch.save({"state_dict": state}, tmp_path / "radimagenet.pth")  # tensors only
    load_pretrained_backbone(model, tmp_path / "radimagenet.pth")


def test_a_backbone_file_with_other_names_is_refused_naming_the_keys(tmp_path):
    from safetensors.torch import save_file

    from training.tasks.ct.backbone import load_pretrained_backbone

    model = ModelRegistry().build(ModelRegistry().get("ct-metastasis"))
    fake = {"resnet.embedder.convolution.weight": torch.zeros(64, 3, 7, 7),
            "conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(2, 2048)}
    save_file(fake, str(tmp_path / "hf.safetensors"))
    before = model.conv1.weight.clone()
    with pytest.raises(DataError) as caught:
        load_pretrained_backbone(model, tmp_path / "hf.safetensors")
    message = str(caught.value)
    assert "hf.safetensors" in message and "unexpected key(s) (resnet.embedder" in message
    assert "264 missing key(s) (bn1.bias, bn1.running_mean" in message  # 265 less conv1
    assert "and 256 more" in message and "1 unexpected key(s)" in message
    assert torch.equal(model.conv1.weight, before)  # nothing loaded
    (tmp_path / "other.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"other\.pth: not a safetensors file or a tensors-only"):
        load_pretrained_backbone(model, tmp_path / "other.pth")
    bad = _backbone_state(model, torch.zeros(64, 3, 7, 7))
    bad["layer1.0.conv1.weight"] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / "wrong_shape.pth")
    with pytest.raises(DataError, match=r"wrong_shape\.pth: .*layer1\.0\.conv1\.weight"):
        load_pretrained_backbone(model, tmp_path / "wrong_shape.pth")
    with pytest.raises(DataError, match=r"missing\.pth: no such file"):
        load_pretrained_backbone(model, tmp_path / "missing.pth")


def test_backbone_flag_reaches_the_config(dataset, tmp_path):
    from training.cli import build_parser

    args = build_parser().parse_args(["ct", "--data", str(dataset), "--backbone", "w.pth"])
    assert args.backbone == "w.pth"
    with pytest.raises(DataError, match=r"nothing\.pth: no such file"):
        main(["ct", "--data", str(dataset), "--backbone", str(tmp_path / "nothing.pth"),
              "--device", "cpu", "--epochs", "1"])
    with pytest.raises(ValueError, match="give the backbone file once"):
        main(["ct", "--data", str(dataset), "--backbone", "a.pth", "--set", "pretrained=b.pth"])


def test_milestones_every_epoch_carry_epoch_stage_and_f1(trained):
    history = json.loads((trained / "history.json").read_text())
    folder = trained / "checkpoints" / "milestones"
    names = sorted(p.stem for p in folder.glob("*.safetensors"))
    expected = [f"epoch{e + 1:03d}_stage{e + 1}_f1_{history['patient_f1'][e]:.4f}"
                for e in range(2)]
    assert names == expected
    for epoch, name in enumerate(names):
        loaded = load_checkpoint(folder / name)
        assert loaded.spec.threshold == history["threshold"][epoch]
        sidecar = json.loads((folder / f"{name}.json").read_text())
        assert sidecar["metrics"]["epoch"] == epoch
    last = load_checkpoint(trained / "checkpoints" / "last").model.state_dict()
    final = load_checkpoint(folder / names[-1]).model.state_dict()
    assert all(torch.equal(last[k], final[k]) for k in last)


def test_milestone_names_and_stages():
    from training.tasks.ct.milestones import MilestoneCheckpoints, milestone_name

    assert milestone_name(49, 3, 0.82764) == "epoch050_stage3_f1_0.8276"
    assert milestone_name(0, 1, float("nan")) == "epoch001_stage1_f1_nan"
    keeper = MilestoneCheckpoints(None, 5, (0, 5, 12))
    assert [keeper.stage(e) for e in (0, 4, 5, 11, 12, 49)] == [1, 1, 2, 2, 3, 3]


def test_training_and_inference_prepare_a_slice_identically(trained, dataset):
    """The sidecar says z-score; training's prepared slice is what the plugin feeds."""
    from napari_neuroseg.analysis.volume import prepare_ct_slice
    from napari_neuroseg.dataset import Dataset
    from napari_neuroseg.models.runner import normalize
    from napari_neuroseg.preprocess.ct import brain_mask
    from napari_neuroseg.preprocess.ct_input import CT_RECIPE_STEPS

    spec = load_checkpoint(trained / "checkpoints" / "best").spec
    assert tuple(spec.input.preprocessing) == CT_RECIPE_STEPS
    assert spec.extra["ct_window"] == {"center": 40.0, "width": 80.0}
    data = Dataset.open(dataset)
    index = N_SLICES + 1  # a middle slice of a positive patient
    hu = data.read_image(data.items[index]).astype(np.float32)
    spacing = tuple(data.items[index].region["spacing_mm"][-2:])
    inference = prepare_ct_slice(hu, spec, spacing)
    training = model_input(hu, spec, spacing, brain_mask(hu, spacing=spacing))
    np.testing.assert_array_equal(training, inference)
    brain = inference != inference[0, 0]
    assert abs(inference[brain].mean()) < 0.5 and inference.shape == (32, 32)
    prepared = prepare_slices(data, [index], spec, 0.0)
    x = CTSlices(prepared, [1] * len(data.items), spec)[0][0]
    fed = normalize(torch.from_numpy(inference)[None, None], spec.input.normalization)[0]
    torch.testing.assert_close(x, fed, atol=2e-3 * float(fed.abs().max()), rtol=0)


def test_augmentation_of_a_zscored_slice_works_on_0_1(trained, dataset):
    from napari_neuroseg.dataset import Dataset

    spec = load_checkpoint(trained / "checkpoints" / "best").spec
    data = Dataset.open(dataset)
    prepared = prepare_slices(data, [N_SLICES + 1], spec, 0.0)
    seen = []

    def identity(image, mask, rng):
        seen.append((float(image.min()), float(image.max())))
        return image, mask

    plain = CTSlices(prepared, [1] * len(data.items), spec)[0][0]
    same = CTSlices(prepared, [1] * len(data.items), spec,
                    ClassConditionalAugment(positive=identity, negative=identity))[0][0]
    assert seen == [(0.0, 1.0)]
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=0)
