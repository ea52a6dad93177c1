"""`headlens layers distances|prune|heal`: angular distances, block removal, LoRA healing."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from headlens.cli.common import (
    DeviceOpt,
    DtypeOpt,
    FormatOpt,
    ModelOpt,
    check_format,
    fail,
    load,
    print_json,
)

TextFileOpt = typer.Option(None, "--text-file", help="UTF-8 text file, one sample per non-empty line "
                           "(default: the embedded corpus).")
DatasetOpt = typer.Option(None, "--dataset", help="datasets split as name[:config]:split[:column], "
                          "e.g. allenai/c4:en:validation (needs network or a local cache).")


def _layer_texts(text_file: Optional[Path], dataset: Optional[str], n: Optional[int], seed: int) -> list:
    from headlens.tasks.texts import DatasetTexts, load_texts

    if text_file is not None and dataset is not None:
        fail("give --text-file or --dataset, not both")
    source = text_file if text_file is not None else (DatasetTexts.parse(dataset) if dataset else None)
    return load_texts(source, n, seed=seed)


def layers_distances(
    model: str = ModelOpt,
    text_file: Optional[Path] = TextFileOpt,
    dataset: Optional[str] = DatasetOpt,
    n_texts: int = typer.Option(64, "--n-texts", help="Texts to average over (the first N)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_len: Optional[int] = typer.Option(None, "--max-len", help="Tokens per text (start kept); default the context."),
    seed: int = typer.Option(0, "--seed", help="Seed of the embedded corpus."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write the row-normalised heatmap here."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """Angular distance d(l, n) between the residual streams entering layers l and l+n; best block per n."""
    check_format(fmt)
    if html is not None:
        from headlens.results.outputs import check_out_file

        check_out_file(html, option="--html", example="distances.html")
    from headlens.analyses.layers import DistancesOptions, cached_layer_distances
    from headlens.results.cache import ResultCache
    from headlens.tasks.texts import DatasetTexts

    if text_file is not None and dataset is not None:
        fail("give --text-file or --dataset, not both")
    options = DistancesOptions(n_texts=n_texts, seed=seed, max_len=max_len, batch_size=batch_size)
    if dataset is None:  # a missing or empty text file fails before the model loads
        _layer_texts(text_file, None, n_texts, seed)
    source = text_file if text_file is not None else (DatasetTexts.parse(dataset) if dataset else None)
    dist = cached_layer_distances(load(model, device, dtype), source, options, cache=ResultCache())
    if html is not None:
        from headlens.report.figures import write_html
        from headlens.report.layers import distance_heatmap

        write_html(distance_heatmap(dist), html)
    if fmt == "json":
        print_json(dist.to_dict())
        return
    typer.echo(f"{dist.model}: {dist.n_layers} layers, {dist.n_samples} texts, "
               f"{dist.n_truncated} truncated to {dist.max_len} tokens")
    typer.echo("n\tbest_start\tremoved_layers\tdistance")
    for n in range(1, dist.n_layers + 1):
        start, d = dist.best(n)
        typer.echo(f"{n}\t{start}\t{start}-{start + n - 1}\t{d:.4f}")


def layers_prune(
    model: str = ModelOpt,
    n: int = typer.Option(..., "--n", help="Number of consecutive layers to remove."),
    method: str = typer.Option("similarity", "--method", help="similarity (block l*(n)) or deepest "
                               "(layers L-1-n .. L-2)."),
    out: Path = typer.Option(..., "--out", help="Folder for the pruned Hugging Face checkpoint: new, empty, or an "
                             "earlier headlens checkpoint (replaced whole); never the input model's folder."),
    text_file: Optional[Path] = TextFileOpt,
    dataset: Optional[str] = DatasetOpt,
    n_texts: int = typer.Option(64, "--n-texts"),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_len: Optional[int] = typer.Option(None, "--max-len"),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """Remove a block of n layers (most similar block, or the deepest-but-last) and save the model."""
    check_format(fmt)
    from headlens.analyses.layers import layer_distances
    from headlens.errors import HeadlensError, closest
    from headlens.model.surgery import check_model_out, deepest_block, remove_layers, save_model

    if method not in ("similarity", "deepest"):
        raise HeadlensError(f"--method {method!r} is unknown; {closest(method, ['similarity', 'deepest'])}")
    check_model_out(out, inputs=[model])
    bridge = load(model, device, dtype)
    L = bridge.cfg.n_layers
    distance = None
    if method == "deepest":
        start = deepest_block(L, n)
    else:
        deepest_block(L, n)  # same range check before the distance pass
        texts = _layer_texts(text_file, dataset, n_texts, seed)
        start, distance = layer_distances(bridge, texts, batch_size=batch_size, max_len=max_len).best(n)
    pruned = remove_layers(bridge, start, n)
    save_model(pruned, out, inputs=[model])
    info = {"model": model, "method": method, "n_layers_before": L, "n_layers_after": L - n,
            "removed_layers": list(range(start, start + n)), "distance": distance, "out": str(out)}
    if fmt == "json":
        print_json(info)
        return
    typer.echo(f"removed layers {start}..{start + n - 1} of {L} ({method}"
               + (f", d={distance:.4f}" if distance is not None else "") + f"); saved to {out}")


def layers_heal(
    model: str = ModelOpt,
    out: Path = typer.Option(..., "--out", help="Folder for the healed checkpoint (same rules as layers prune --out)."),
    text_file: Optional[Path] = TextFileOpt,
    dataset: Optional[str] = DatasetOpt,
    n_texts: Optional[int] = typer.Option(None, "--n-texts", help="Texts to use (default: all of the "
                                          "file, 512 of the embedded corpus)."),
    steps: int = typer.Option(100, "--steps"),
    rank: int = typer.Option(8, "--rank", help="LoRA rank r (alpha = r)."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine schedule, 10% warm-up)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_len: int = typer.Option(128, "--max-len"),
    heldout: float = typer.Option(0.2, "--heldout", help="Fraction of texts held out for the loss."),
    seed: int = typer.Option(0, "--seed"),
    quantize: str = typer.Option("auto", "--quantize", help="auto (4-bit base with CUDA + bitsandbytes), never, always."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """LoRA-heal a (pruned) model on text; print held-out loss before and after; save it."""
    check_format(fmt)
    from headlens.analyses.healing import check_options, heal
    from headlens.errors import HeadlensError, closest
    from headlens.model.surgery import check_model_out, save_model

    if quantize not in ("auto", "never", "always"):
        raise HeadlensError(f"--quantize {quantize!r} is unknown; {closest(quantize, ['auto', 'never', 'always'])}")
    check_options(steps=steps, rank=rank, lr=lr, batch_size=batch_size, max_len=max_len,
                  heldout_fraction=heldout, warmup_steps=None)
    check_model_out(out, inputs=[model])
    count = n_texts if n_texts is not None else (None if text_file or dataset else 512)
    texts = _layer_texts(text_file, dataset, count, seed)
    result = heal(load(model, device, dtype), texts, heldout_fraction=heldout, steps=steps, rank=rank,
                  lr=lr, batch_size=batch_size, max_len=max_len, seed=seed, quantize=quantize)  # type: ignore[arg-type]
    save_model(result.model, out, inputs=[model])
    if fmt == "json":
        print_json({**result.summary(), "out": str(out)})
        return
    typer.echo(f"held-out loss {result.heldout_loss_before:.4f} -> {result.heldout_loss_after:.4f} "
               f"({result.n_heldout} texts); train loss {result.train_loss_before:.4f} -> "
               f"{result.train_loss_after:.4f} ({result.n_train} texts, {steps} steps, rank {rank}"
               f"{', 4-bit base' if result.quantized else ''}, {result.seconds:.1f}s); saved to {out}")
