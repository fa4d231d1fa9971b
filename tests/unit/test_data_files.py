"""The file-based dataset builders on tiny files the tests write, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brickwork.data.image_csv import build_image_csv
from brickwork.data.image_folder import build_image_folder
from brickwork.data.loader import balanced_sample_weights
from brickwork.data.sampler import ResumableSampler
from brickwork.data.tabular_csv import build_tabular_csv
from brickwork.data.text_csv import build_text_csv, pad_collate
from brickwork.errors import ConfigError, DataError


def write_images(root: Path, per_class: dict[str, int], size: int = 20) -> list[Path]:
    """Class folders of small RGB images, PNG and JPEG mixed, different per class."""
    rng = np.random.default_rng(0)
    files = []
    for index, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 60, (size, size + 4, 3)) + 60 * index
            suffix = ".png" if i % 2 else ".jpg"
            path = root / name / f"{i}{suffix}"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            files.append(path)
    return files


def test_image_folder_splits_stratified_and_resizes(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"cat": 10, "dog": 10})
    bundle = build_image_folder(str(tmp_path / "train"), image_size=16, val_fraction=0.2)
    assert bundle.label_names == ["cat", "dog"]
    assert len(bundle.train) == 16 and len(bundle.val) == 4  # type: ignore[arg-type]
    assert sorted(label for _, label in (bundle.val[i] for i in range(4))) == [0, 0, 1, 1]
    image, _ = bundle.train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert bundle.input_shape == (3, 16, 16)
    assert bundle.train_targets is not None and bundle.train_targets.tolist().count(0) == 8


def test_image_folder_takes_transforms_from_config_and_dataset_normalization(
    tmp_path: Path,
) -> None:
    write_images(tmp_path / "train", {"a": 4, "b": 4})
    bundle = build_image_folder(
        str(tmp_path / "train"),
        image_size=16,
        mode="L",
        normalize="dataset",
        train_transforms=[{"name": "RandomResizedCrop", "size": 16}, "RandomHorizontalFlip"],
    )
    images = torch.stack([bundle.val[i][0] for i in range(len(bundle.val))])  # type: ignore[arg-type]
    assert images.shape[1:] == (1, 16, 16)
    assert bundle.train[0][0].shape == (1, 16, 16)
    mean = bundle.extra["normalize"]["mean"]
    assert len(mean) == 1 and 0 < mean[0] < 1


def test_image_folder_uses_separate_val_folder_and_rejects_unseen_class(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"a": 2, "b": 2})
    write_images(tmp_path / "val", {"a": 1, "b": 1})
    bundle = build_image_folder(str(tmp_path / "train"), val_root=str(tmp_path / "val"))
    assert len(bundle.val) == 2 and len(bundle.train) == 4  # type: ignore[arg-type]
    write_images(tmp_path / "val", {"zebra": 1})
    with pytest.raises(DataError, match=r"val_root.*'zebra' is not among the training classes"):
        build_image_folder(str(tmp_path / "train"), val_root=str(tmp_path / "val"))


def test_image_folder_missing_root_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.root = '.*nowhere': no such folder"):
        build_image_folder(str(tmp_path / "nowhere"))


def test_undecodable_image_is_an_error_naming_the_file_or_skipped_and_counted(
    tmp_path: Path,
) -> None:
    write_images(tmp_path / "train", {"a": 4, "b": 4})
    broken = tmp_path / "train" / "a" / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    bundle = build_image_folder(str(tmp_path / "train"), image_size=16, val_fraction=0.0)
    index = next(i for i, p in enumerate(bundle.train.paths) if p == broken)  # type: ignore[attr-defined]
    with pytest.raises(DataError, match=r"broken.jpg: cannot decode image.*on_bad_image: skip"):
        bundle.train[index]
    skipping = build_image_folder(
        str(tmp_path / "train"), image_size=16, val_fraction=0.0, on_bad_image="skip"
    )
    assert skipping.extra["num_skipped_images"] == 1
    assert len(skipping.train) == 8  # type: ignore[arg-type]


def test_unknown_transform_suggests_the_nearest_name(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"a": 2, "b": 2})
    with pytest.raises(
        ConfigError, match=r"train_transforms\[0\].*did you mean `RandomHorizontalFlip`"
    ):
        build_image_folder(str(tmp_path / "train"), train_transforms=["RandomHorizontalFlp"])


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_image_csv_reads_string_labels_relative_to_root(tmp_path: Path) -> None:
    files = write_images(tmp_path / "images", {"x": 3, "y": 3})
    rows = [
        f"{p.relative_to(tmp_path / 'images')},{'spot' if 'x' in p.parts else 'clean'}"
        for p in files
    ]
    csv = _write_csv(tmp_path / "train.csv", "image,label", rows)
    bundle = build_image_csv(
        str(csv), root=str(tmp_path / "images"), image_size=16, val_fraction=0.34
    )
    assert bundle.label_names == ["clean", "spot"]
    assert len(bundle.train) + len(bundle.val) == 6  # type: ignore[arg-type]
    dataset, names = bundle.load_unlabeled(csv)  # type: ignore[misc]
    assert len(dataset) == 6 and names[0] == rows[0].split(",")[0]  # type: ignore[arg-type]


def test_image_csv_missing_label_column_and_unseen_label_are_named(tmp_path: Path) -> None:
    files = write_images(tmp_path, {"x": 2})
    csv = _write_csv(
        tmp_path / "train.csv", "image,class", [f"{f.relative_to(tmp_path)},1" for f in files]
    )
    with pytest.raises(DataError, match=r"train.csv: no column 'label'.*its columns: image, class"):
        build_image_csv(str(csv))
    good = _write_csv(
        tmp_path / "good.csv", "image,label", [f"{f.relative_to(tmp_path)},1" for f in files]
    )
    val = _write_csv(tmp_path / "val.csv", "image,label", [f"{files[0].relative_to(tmp_path)},7"])
    with pytest.raises(DataError, match=r"val.csv: row 2: label '7' never occurs in the training"):
        build_image_csv(str(good), val_csv=str(val))


def test_tabular_csv_fits_scaling_and_categories_on_train_only(tmp_path: Path) -> None:
    rows = [f"{i},{'red' if i % 2 else 'blue'},{'big' if i > 9 else 'small'}" for i in range(20)]
    csv = _write_csv(tmp_path / "t.csv", "size,colour,label", rows)
    bundle = build_tabular_csv(str(csv), target="label", val_fraction=0.2, test_fraction=0.2)
    assert bundle.input_shape == (3,)  # size, colour=blue, colour=red
    assert bundle.extra["feature_names"] == ["size", "colour=blue", "colour=red"]
    x, _ = bundle.train[:]  # type: ignore[index]
    assert abs(float(x[:, 0].mean())) < 1e-5 and abs(float(x[:, 0].std(unbiased=False)) - 1) < 1e-4
    assert set(x[:, 1:].sum(1).tolist()) == {1.0}
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 20  # type: ignore[arg-type]


def test_tabular_csv_missing_target_column_is_named(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "t.csv", "a,b", ["1,2"])
    with pytest.raises(DataError, match=r"t.csv: no column 'label'.*its columns: a, b"):
        build_tabular_csv(str(csv), target="label")


def test_text_csv_builds_vocabulary_on_train_and_pads_batches(tmp_path: Path) -> None:
    rows = [f"good movie {i},pos" for i in range(6)] + [
        f"bad film number {i},neg" for i in range(6)
    ]
    csv = _write_csv(tmp_path / "x.csv", "text,label", rows)
    bundle = build_text_csv(str(csv), val_fraction=0.25)
    vocabulary = bundle.extra["fitted"]["vocabulary"]
    assert vocabulary[:2] == ["<pad>", "<unk>"] and bundle.extra["vocab_size"] == len(vocabulary)
    assert bundle.collate_fn is pad_collate and bundle.label_names == ["neg", "pos"]
    inputs, targets = pad_collate([bundle.train[i] for i in range(4)])
    assert inputs["tokens"].shape[0] == 4 and targets.shape == (4,)


def test_pad_collate_pads_and_returns_lengths_and_mask() -> None:
    batch = [(torch.tensor([5, 6, 7]), 0), (torch.tensor([8]), 1), (torch.tensor([9, 4]), 1)]
    inputs, targets = pad_collate(batch)
    assert inputs["tokens"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 4, 0]]
    assert inputs["lengths"].tolist() == [3, 1, 2]
    assert inputs["mask"].tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    assert targets.tolist() == [0, 1, 1]
    (unlabelled,) = pad_collate([(torch.tensor([1, 2]),), (torch.tensor([3]),)])
    assert unlabelled["tokens"].shape == (2, 2)


def test_weighted_sampler_balances_classes_and_is_seeded_per_epoch() -> None:
    targets = torch.tensor([0] * 90 + [1] * 10)
    sampler = ResumableSampler(100, seed=3, weights=balanced_sample_weights(targets))
    sampler.set_epoch(2)
    first = sampler.indices()
    drawn = targets[first]
    assert 0.35 < float(drawn.float().mean()) < 0.65  # about half the draws are the rare class
    again = ResumableSampler(100, seed=3, weights=balanced_sample_weights(targets))
    again.set_epoch(2, start_index=40)
    assert list(again) == first[40:]
    sampler.set_epoch(3)
    assert sampler.indices() != first


def _numeric_table(tmp_path: Path, cell: str = "n/a", label: str = "big") -> Path:
    rows = [
        f"{i if i != 7 else cell},{'red' if i % 2 else 'blue'},{'big' if i > 9 else 'small'}"
        for i in range(20)
    ]
    rows[3] = rows[3].rsplit(",", 1)[0] + f",{label}"
    return _write_csv(tmp_path / "t.csv", "size,colour,label", rows)


def test_tabular_csv_refuses_a_stray_text_cell_in_a_numeric_column(tmp_path: Path) -> None:
    csv = _numeric_table(tmp_path)
    with pytest.raises(
        DataError, match=r"column 'size' is numeric but rows 9 hold 'n/a'.*na_values"
    ):
        build_tabular_csv(str(csv), target="label")
    bundle = build_tabular_csv(str(csv), target="label", na_values=["n/a"])
    assert bundle.extra["feature_names"][0] == "size"  # still one numeric column, not 20 levels


def test_tabular_csv_refuses_an_empty_label(tmp_path: Path) -> None:
    csv = _numeric_table(tmp_path, cell="7", label="")
    with pytest.raises(DataError, match=r"row 5: label is empty; fill in the label"):
        build_tabular_csv(str(csv), target="label")


def test_tabular_csv_fills_missing_cells_as_chosen_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = _numeric_table(tmp_path, cell="")
    with caplog.at_level("INFO", logger="brickwork"):
        bundle = build_tabular_csv(str(csv), target="label", missing="median", test_fraction=0)
    assert "size: 1 empty cell(s) in training filled with the median" in caplog.text
    fitted = bundle.extra["fitted"]
    assert fitted["fill"]["size"] != fitted["numeric"]["size"][0]  # the median, not the mean
    with pytest.raises(DataError, match=r"row 9: size is empty .*data.missing is 'error'"):
        build_tabular_csv(str(csv), target="label", missing="error")


def test_tabular_csv_warns_with_a_count_of_unseen_categories_at_predict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = _numeric_table(tmp_path, cell="7")
    bundle = build_tabular_csv(str(csv), target="label", id_column="colour")
    new = _write_csv(tmp_path / "new.csv", "size,colour", ["1,green", "2,green", "3,red"])
    assert bundle.load_unlabeled is not None
    with caplog.at_level("WARNING", logger="brickwork"):
        _, names = bundle.load_unlabeled(new)
    assert "2 row(s) hold a colour category training never saw" in caplog.text
    assert names == ["green", "green", "red"]  # the chosen id column names each row


def test_text_csv_gives_nfc_and_nfd_forms_of_a_sentence_the_same_tokens(tmp_path: Path) -> None:
    import unicodedata

    sentence = "한국어 공부 노트"
    rows = [f"{sentence} {i},ko" for i in range(6)] + [f"english notes {i},en" for i in range(6)]
    csv = _write_csv(tmp_path / "x.csv", "text,label", rows)
    new = _write_csv(
        tmp_path / "new.csv",
        "text",
        [unicodedata.normalize("NFC", sentence), unicodedata.normalize("NFD", sentence)],
    )
    for form, same in (("NFC", True), (None, False)):
        bundle = build_text_csv(str(csv), tokenizer="characters", unicode_normalization=form)
        assert bundle.load_unlabeled is not None
        dataset, names = bundle.load_unlabeled(new)
        assert names[0] == unicodedata.normalize("NFC", sentence)  # each row named by its text
        assert torch.equal(dataset[0][0], dataset[1][0]) is same


def test_image_csv_finds_a_missing_val_or_test_file_before_training(tmp_path: Path) -> None:
    files = write_images(tmp_path / "images", {"x": 3, "y": 3})
    rows = [f"{p.relative_to(tmp_path / 'images')},{p.parent.name}" for p in files]
    train = _write_csv(tmp_path / "train.csv", "image,label", rows)
    test = _write_csv(tmp_path / "test.csv", "image,label", [rows[0], "x/gone.png,x"])
    root = str(tmp_path / "images")
    with pytest.raises(
        DataError, match=r"test.csv: 1 listed image file\(s\) do not exist \(rows 3"
    ):
        build_image_csv(str(train), root=root, image_size=16, test_csv=str(test))
    skipping = build_image_csv(
        str(train), root=root, image_size=16, test_csv=str(test), on_bad_image="skip"
    )
    assert len(skipping.test) == 1  # type: ignore[arg-type]
