"""Dataset loaders and the device-resident batch loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gentrain.core.errors import ConfigError, DataNotFoundError
from gentrain.data import DatasetConfig, DeviceTensorLoader, build_dataset


def test_mnist_decodes_the_real_gz_files_in_place(data_dir):
    data = build_dataset(DatasetConfig(name="mnist", root=str(data_dir), download=False))
    assert data.train.shape == (60000, 1, 28, 28) and data.val.shape == (10000, 1, 28, 28)
    assert data.train.dtype == torch.uint8
    assert 0 < data.train.float().mean() < 255 and int(data.train.max()) == 255


def test_an_idx_file_is_decoded_once_per_version(tmp_path):
    """A sweep's jobs reload the same files: decoded once, read-only; a file replaced
    (another size or time) is decoded anew, never served from the old decode."""
    import os

    from gentrain.data.mnist import read_idx_once

    def write(path, rows):
        header = bytes([0, 0, 0x08, 2]) + len(rows).to_bytes(4, "big") + (3).to_bytes(4, "big")
        path.write_bytes(header + bytes(v for row in rows for v in row))

    path = tmp_path / "labels-idx2-ubyte"
    write(path, [[1, 2, 3]])
    first = read_idx_once(path)
    assert first.tolist() == [[1, 2, 3]] and not first.flags.writeable
    assert read_idx_once(path) is first
    write(path, [[4, 5, 6], [7, 8, 9]])
    os.utime(path, ns=(1, 1))  # even with the old time, the size differs
    assert read_idx_once(path).tolist() == [[4, 5, 6], [7, 8, 9]]


def test_fashion_mnist_loads(fashion_data_dir):
    data = build_dataset(
        DatasetConfig(name="fashion_mnist", root=str(fashion_data_dir), download=False, limit=100)
    )
    assert data.train.shape == (100, 1, 28, 28) and data.image_shape == (1, 28, 28)


def test_resize_and_channel_conversion(data_dir):
    cfg = DatasetConfig(
        name="mnist", root=str(data_dir), download=False, limit=8, image_size=32, channels=3
    )
    data = build_dataset(cfg)
    assert data.train.shape == (8, 3, 32, 32) and data.train.dtype == torch.uint8
    assert torch.equal(data.train[:, 0], data.train[:, 1])


def test_missing_mnist_names_the_directory_and_the_files(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        build_dataset(DatasetConfig(name="mnist", root=str(tmp_path), download=False))
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        assert stem in message
    assert "GENTRAIN_DATA_DIR" in message


def _write_cifar(root: Path, per_batch: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [0] * per_batch,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)


def test_cifar10_reads_the_python_batches(tmp_path):
    _write_cifar(tmp_path)
    data = build_dataset(DatasetConfig(name="cifar10", root=str(tmp_path), download=False))
    assert data.train.shape == (20, 3, 32, 32) and data.val.shape == (4, 3, 32, 32)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)["data"]
    assert torch.equal(data.val[0].flatten(), torch.from_numpy(raw[0]))


def test_cifar10_missing_names_the_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        build_dataset(DatasetConfig(name="cifar10", root=str(tmp_path), download=False))


def _write_images(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        sub = folder / f"class{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (40 + i, 30, 3), dtype=np.uint8)  # sizes vary
        Image.fromarray(pixels).save(sub / f"img{i}.png")


def test_image_folder_resizes_crops_and_splits(tmp_path):
    _write_images(tmp_path, 10)
    cfg = DatasetConfig(
        name="image_folder", path=str(tmp_path), image_size=16, channels=3, val_fraction=0.2
    )
    data = build_dataset(cfg)
    assert data.train.shape == (8, 3, 16, 16) and data.val.shape == (2, 3, 16, 16)
    grey = build_dataset(
        DatasetConfig(name="image_folder", path=str(tmp_path), image_size=16, channels=1)
    )
    assert grey.image_shape == (1, 16, 16)


def test_image_folder_reports_unreadable_files_by_name(tmp_path):
    _write_images(tmp_path, 4)
    (tmp_path / "class0" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataNotFoundError) as info:
        build_dataset(DatasetConfig(name="image_folder", path=str(tmp_path), image_size=16))
    assert "broken.png" in str(info.value) and "1 file(s)" in str(info.value)


def test_image_folder_needs_a_path():
    with pytest.raises(ConfigError, match="dataset.path"):
        build_dataset(DatasetConfig(name="image_folder", image_size=16))


def test_loader_is_seeded_per_epoch_and_resumable():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 2, 2).contiguous()
    loader = DeviceTensorLoader(images, batch_size=8, device=torch.device("cpu"), seed=3)
    epoch0 = [b.images[:, 0, 0, 0] for b in loader.epoch(0)]
    assert len(epoch0) == 5 and epoch0[0].dtype == torch.float32
    assert sorted(torch.cat(epoch0).mul(255).round().long().tolist()) == list(range(40))
    assert all(
        torch.equal(a, b) for a, b in zip(epoch0, [b.images[:, 0, 0, 0] for b in loader.epoch(0)])
    )
    assert not torch.equal(
        torch.cat(epoch0), torch.cat([b.images[:, 0, 0, 0] for b in loader.epoch(1)])
    )
    tail = [b.images[:, 0, 0, 0] for b in loader.epoch(0, start_batch=3)]
    assert all(torch.equal(a, b) for a, b in zip(epoch0[3:], tail)) and len(tail) == 2


def test_loader_batches_carry_each_image_s_label_only_when_given():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    labels = (torch.arange(40) * 7) % 10  # a label that can be told from the pixel value
    with_labels = DeviceTensorLoader(images, 8, torch.device("cpu"), seed=3, labels=labels)
    for batch in with_labels.epoch(2):
        pixels = batch.images[:, 0, 0, 0].mul(255).round().long()
        assert batch.labels.dtype == torch.long and torch.equal(batch.labels, (pixels * 7) % 10)
    without = DeviceTensorLoader(images, 8, torch.device("cpu"), seed=3)
    assert all(b.labels is None for b in without.epoch(2))
    with pytest.raises(ValueError, match="labels must have shape"):
        DeviceTensorLoader(images, 8, torch.device("cpu"), labels=labels[:39])


def test_loader_refuses_a_split_smaller_than_a_batch():
    with pytest.raises(ConfigError, match="set trainer.batch_size to at most"):
        DeviceTensorLoader(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), 8, torch.device("cpu"))


def test_a_labelled_folder_splits_each_class_in_the_same_share_reproducibly():
    from gentrain.data.image_folder import split

    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)  # unbalanced, as a user's folder is
    train, val = split(len(labels), 0.1, labels)
    assert torch.bincount(labels[val], minlength=3).tolist() == [9, 1, 0]
    assert torch.bincount(labels[train], minlength=3).tolist() == [81, 8, 1]
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))  # a partition
    again_train, again_val = split(len(labels), 0.1, labels)
    assert torch.equal(again_val, val) and torch.equal(again_train, train)  # any run, any seed
    assert len(set(labels[val[:5]].tolist())) > 1  # classes mixed, not one block per class
    _, unlabelled_val = split(100, 0.1, None)
    assert len(unlabelled_val) == 10


def test_the_cifar10_preset_trains_on_cifar_format_files_the_test_writes(make_config, tmp_path):
    """SN-GAN's recipe (experiment=gan_cifar10, not reproduced here) through the real
    reader, on CIFAR-format batches written here, at a tiny width."""
    from gentrain.cli.train import train

    _write_cifar(tmp_path / "data", per_batch=16)
    cfg = make_config(
        "experiment=gan_cifar10",
        "debug=fast",
        f"paths.data_dir={tmp_path / 'data'}",
        "model.width=8",
        "trainer.batch_size=16",
    )
    assert cfg.model.family == "resnet" and cfg.model.n_critic == 5
    assert list(cfg.optimizer.betas) == [0.0, 0.9]
    metrics = train(cfg)
    assert metrics["step"] == 4 and metrics["val/fid"] >= 0  # evaluated, as a user runs it
