"""A tiny ECAPA-TDNN model laid out like speechbrain/spkrec-ecapa-voxceleb.

(``--full`` builds one with the real model's sizes, random weights: for
measuring memory and time per window where the real model cannot be had.)

The real model cannot be downloaded here, so tests build a small one with
SpeechBrain's own classes (random weights, a few channels), write the same
files the hub repository holds and load it through the production path,
``EncoderClassifier.from_hparams(source=<dir>, savedir=...)``.

Random weights make its scores meaningless for accuracy; what it proves is
that loading, batching, enrollment and scoring work with SpeechBrain's code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

N_MELS = 80


@dataclass(frozen=True)
class Sizes:
    channels: tuple[int, ...]
    attention_channels: int
    res2net_scale: int
    se_channels: int
    embedding_dim: int
    speakers: int


TINY = Sizes((16, 16, 16, 16, 48), 8, 4, 8, 32, 4)
# speechbrain/spkrec-ecapa-voxceleb's sizes (VoxCeleb 1+2: 7205 speakers).
FULL = Sizes((1024, 1024, 1024, 1024, 3072), 128, 8, 128, 192, 7205)
EMBEDDING_DIM = TINY.embedding_dim

# Mirrors the hub model card's hyperparams.yaml (same keys, same pretrainer
# paths through <pretrained_path>), with small sizes. pretrained_path names the
# hub repository as in the real file: the worker must point it at the local
# directory, or loading would try the network.
def hyperparams(sizes: Sizes) -> str:
    return f"""\
# Random-weight ECAPA-TDNN for tests, laid out like speechbrain/spkrec-ecapa-voxceleb.
n_mels: {N_MELS}

pretrained_path: speechbrain/spkrec-ecapa-voxceleb

out_n_neurons: {sizes.speakers}

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {list(sizes.channels)}
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: {sizes.attention_channels}
    res2net_scale: {sizes.res2net_scale}
    se_channels: {sizes.se_channels}
    lin_neurons: {sizes.embedding_dim}

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {sizes.embedding_dim}
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


def build_tiny_ecapa(directory: Path, seed: int = 1986, sizes: Sizes = TINY) -> Path:
    """Write hyperparams.yaml and the checkpoint files into directory."""
    import torch
    from speechbrain.dataio.encoder import CategoricalEncoder
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.processing.features import InputNormalization

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ECAPA_TDNN(N_MELS, channels=list(sizes.channels), kernel_sizes=[5, 3, 3, 3, 1],
                       dilations=[1, 2, 3, 4, 1], attention_channels=sizes.attention_channels,
                       res2net_scale=sizes.res2net_scale, se_channels=sizes.se_channels,
                       lin_neurons=sizes.embedding_dim)
    classifier = Classifier(input_size=sizes.embedding_dim, out_neurons=sizes.speakers)
    # One training-mode pass gives the global embedding normalizer real
    # statistics, as training would have.
    norm = InputNormalization(norm_type="global", std_norm=False)
    norm.train()
    norm(torch.randn(8, 1, sizes.embedding_dim), torch.ones(8))
    norm.eval()

    torch.save(model.state_dict(), directory / "embedding_model.ckpt")
    torch.save(classifier.state_dict(), directory / "classifier.ckpt")
    norm._save(directory / "mean_var_norm_emb.ckpt")
    labels = CategoricalEncoder()
    labels.update_from_iterable([f"spk{i}" for i in range(sizes.speakers)])
    labels.save(directory / "label_encoder.txt")
    (directory / "hyperparams.yaml").write_text(hyperparams(sizes))
    return directory


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description="Write a random-weight ECAPA model directory for from_hparams.")
    p.add_argument("directory", type=Path)
    p.add_argument("--full", action="store_true", help="the real model's sizes instead of tiny ones")
    a = p.parse_args()
    print(build_tiny_ecapa(a.directory, sizes=FULL if a.full else TINY))
