"""The ``essa-monai`` command line (python-fire): ``essa-monai <command> --help`` shows each command."""

from __future__ import annotations

import fire

from .peft.summary import default_variants, format_table, parameter_table


class CLI:
    """essa-monai: efficient self-supervised adaptation of DINOv2 to medical images."""

    def params(
        self,
        backbone: str = "vit_base_patch14_dinov2",
        apla_r: int = 128,
        lora_r: int = 4,
        vpt_tokens: int = 10,
        img_size: int = 224,
    ) -> None:
        """Print trainable vs total parameters of the backbone under each PEFT method.

        Args:
            backbone: timm DINOv2 name, e.g. vit_small_patch14_dinov2, vit_base_patch14_reg4_dinov2.
            apla_r: rows of W_O per block for the APLA subset row.
            lora_r: LoRA rank (on Q and V, MED-PEFT's setting).
            vpt_tokens: prompt tokens for the VPT rows.
            img_size: input size (multiple of 14); sets the positional-embedding grid, part of the total.
        """
        rows = parameter_table(backbone, default_variants(apla_r, lora_r, vpt_tokens), img_size=img_size)
        print(f"{backbone} at {img_size}x{img_size} (backbone parameters; heads not included)")
        print(format_table(rows))

    def benchmark_ssa(
        self,
        backbone: str = "vit_small_patch14_dinov2",
        img_size: int = 224,
        batch_size: int = 8,
        n_local: int = 8,
        local_size: int = 98,
        steps: int = 5,
        warmup_steps: int = 2,
        methods: str | list[str] = "full,apla,apla_r,lora,bitfit,vpt",
        apla_r: int = 128,
        lora_r: int = 4,
        vpt_tokens: int = 10,
        n_prototypes: int = 65536,
        precision: str = "fp32",
        device: str = "auto",
        output_dir: str = "runs/benchmark_ssa",
    ) -> None:
        """Measure SSA peak memory, step time and throughput of each PEFT method side by side.

        Each method runs in its own process, one after the other, on the same synthetic multi-crop batch
        (2 global crops of img_size, n_local local crops of local_size, per image). Writes
        ssa_benchmark.csv, .md and .png to output_dir and prints the table (ratios are to full SSA).

        Args:
            methods: comma-separated subset of full, apla, apla_r, lora, bitfit, vpt.
            precision: fp32, bf16 or fp16 (fp16 on CUDA only).
            device: auto (CUDA if available), cpu or cuda.
        """
        from .ssa.benchmark import format_results, run_benchmark, write_results

        names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
        rows = run_benchmark(
            names, apla_r=apla_r, lora_r=lora_r, vpt_tokens=vpt_tokens, backbone=backbone, img_size=img_size,
            local_size=local_size, n_local=n_local, batch_size=batch_size, steps=steps, warmup_steps=warmup_steps,
            n_prototypes=n_prototypes, precision=precision, device=device,
        )
        paths = write_results(rows, output_dir, title=f"SSA cost per PEFT method: {backbone}, {img_size} px, batch {batch_size}")
        print(format_results(rows))
        print(f"written: {', '.join(str(p) for p in paths.values())}")

    def run_essa(
        self,
        dataset: str = "isic_cls",
        ssa_method: str | dict | None = "apla",
        sa_method: str | dict | None = None,
        label_fraction: float = 1.0,
        ssa: bool = True,
        data_dir: str | None = None,
        output_root: str = "runs/essa",
        backbone_name: str | None = None,
        backbone_weights: str | None = None,
        backbone_kwargs: dict | None = None,
        img_size: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        ssa_epochs: int | None = None,
        ssa_batch_size: int | None = None,
        ssa_overrides: dict | None = None,
        sa_overrides: dict | None = None,
        val_split: str = "validation",
        test: bool = False,
        seed: int = 0,
        force: bool = False,
    ) -> None:
        """The whole ESSA pipeline once: SSA with ssa_method on the dataset's unlabeled training images, SA
        with sa_method from the SSA-adapted backbone on label_fraction of the labels, then evaluation.
        Writes <output_root>/<dataset>/<ssa>-<sa>/frac<f>/ (SA model, result.json); the SSA export goes to
        <output_root>/<dataset>/ssa/ and is reused by later runs with the same SSA settings. A finished run
        with the same settings is not run again (force=True reruns SA and evaluation).

        Args:
            dataset: isic_seg (bundle isic_apla), isic_cls (isic_cls_apla) or cxr14 (cxr14_lora).
            ssa_method: PEFT preset (apla, apla_r, lora, bitfit, vpt, vpt_shallow, full, frozen) or a JSON spec like '{"method": "apla", "r": 64}'; SSA with vpt is refused (it exports no merged backbone for SA).
            sa_method: PEFT method for SA; default: the same as ssa_method.
            label_fraction: fraction (0, 1] of the labelled training images for SA (seeded, stratified).
            ssa: False skips SSA: SA from backbone_weights (the baseline).
            data_dir: the dataset folder in its official layout; default: the synthetic demo data.
            output_root: folder for all ESSA runs.
            backbone_name: timm DINOv2 name (default: the bundles', vit_small_patch14_dinov2).
            backbone_weights: official DINOv2 weights file (e.g. dinov2_vits14_pretrain.pth); default random initialisation (demos and tests only).
            backbone_kwargs: extra timm arguments, e.g. '{"embed_dim": 32, "depth": 2, "num_heads": 2}'.
            img_size: SA input size in pixels (multiple of 14), also SSA's global crop size.
            epochs: SA epochs.
            batch_size: SA images per batch.
            ssa_epochs: SSA epochs.
            ssa_batch_size: SSA images per batch (each gives 2 global and N local crops).
            ssa_overrides: other top-level keys of bundles/isic_apla/configs/ssa.json, e.g. '{"lr": 0.0002}'.
            sa_overrides: other top-level keys of the dataset's SA train.json.
            val_split: split of the final evaluation (SA selects its best epoch on validation).
            test: also evaluate on the test split (reported in grids instead of val_split).
            seed: seed of SSA, SA and the label-fraction split.
            force: rerun SA and evaluation even if this run finished before (old folder moved aside).
        """
        from .pipeline import run_essa

        result = run_essa(
            dataset, ssa_method, sa_method, label_fraction, output_root=output_root, force=force, ssa=ssa,
            data_dir=data_dir, backbone_name=backbone_name, backbone_weights=backbone_weights,
            backbone_kwargs=backbone_kwargs, img_size=img_size, epochs=epochs, batch_size=batch_size,
            ssa_epochs=ssa_epochs, ssa_batch_size=ssa_batch_size, ssa_overrides=dict(ssa_overrides or {}),
            sa_overrides=dict(sa_overrides or {}), val_split=val_split, test=test, seed=seed,
        )
        times = result.get("times_s", {})
        state = "finished before (not run again)" if result.get("skipped") else "done"
        print(f"{result['dataset']} {result['label_fraction'] * 100:g}% {result['row']}: {state}")
        for split, metrics in result["metrics"].items():
            # per-class values (e.g. mean_auroc_Atelectasis next to mean_auroc) stay in result.json
            main = {k: v for k, v in metrics.items() if not any(k.startswith(o + "_") for o in metrics if o != k)}
            extra = f" (+{len(metrics) - len(main)} per-class values in result.json)" if len(main) < len(metrics) else ""
            print(f"  {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in main.items() if isinstance(v, float)) + extra)
        params = result["params"]
        ssa_params = "-" if params["ssa_trainable_backbone"] is None else f"{params['ssa_trainable_backbone']:,}"
        print(f"  trainable backbone params: SSA {ssa_params}, SA {params['sa_trainable_backbone']:,}"
              f" of {params['backbone_total']:,}")
        print(f"  wall time: SSA {times.get('ssa', 0):.1f} s, SA {times.get('sa', 0):.1f} s, "
              f"eval {times.get('eval', 0):.1f} s")
        print(f"  result: {result['run_dir']}/result.json")

    def essa_grid(
        self,
        methods: str | tuple = "apla,lora",
        datasets: str | tuple = "isic_cls",
        fractions: float | str | tuple = 1.0,
        ssa: bool = True,
        baseline: bool = False,
        data_dir: str | dict | None = None,
        output_root: str = "runs/essa",
        backbone_name: str | None = None,
        backbone_weights: str | None = None,
        backbone_kwargs: dict | None = None,
        img_size: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        ssa_epochs: int | None = None,
        ssa_batch_size: int | None = None,
        ssa_overrides: dict | None = None,
        sa_overrides: dict | None = None,
        val_split: str = "validation",
        test: bool = False,
        seed: int = 0,
        retry_failed: bool = True,
        force: bool = False,
    ) -> None:
        """ESSA over methods x datasets x label fractions; writes essa_results.csv/.md (rows = methods,
        columns = dataset/fraction key metric, plus trainable parameters) and essa_results_runs.csv to
        output_root. Finished combinations are skipped (resume); a failing one is recorded and the grid
        goes on. SSA runs once per method and dataset, shared by all fractions.

        Args:
            methods: comma-separated presets, e.g. full,apla,lora,bitfit,vpt; apla:lora = SSA apla, SA lora.
            datasets: comma-separated subset of isic_seg, isic_cls, cxr14.
            fractions: comma-separated label fractions, e.g. 0.01,0.1,1.0.
            ssa: False: SA-only baselines for every method.
            baseline: also run every SA method without SSA (rows '<method> (no SSA)').
            data_dir: one folder for all datasets, or a JSON dict like '{"cxr14": "/data/cxr14", "isic_cls": "/data/ISIC2018"}'; default the synthetic demo data.
            retry_failed: rerun combinations recorded as failed.
            force: rerun finished combinations too (old folders moved aside).
            backbone_weights: official DINOv2 weights file; the other arguments are as for run_essa and apply to every combination.
        """
        from .pipeline import essa_grid

        essa_grid(
            methods, datasets, fractions, ssa=ssa, baseline=baseline, data_dir=data_dir, output_root=output_root,
            retry_failed=retry_failed, force=force, backbone_name=backbone_name, backbone_weights=backbone_weights,
            backbone_kwargs=backbone_kwargs, img_size=img_size, epochs=epochs, batch_size=batch_size,
            ssa_epochs=ssa_epochs, ssa_batch_size=ssa_batch_size, ssa_overrides=dict(ssa_overrides or {}),
            sa_overrides=dict(sa_overrides or {}), val_split=val_split, test=test, seed=seed,
        )

    def infer(
        self,
        bundle: str,
        input: str,
        output_dir: str,
        model_file: str | None = None,
        batch_size: int = 4,
        device: str = "auto",
        tta: bool = False,
        sliding_window: bool = False,
        overlap: float = 0.25,
        overwrite: bool = False,
        include_patient_ids: bool = False,
        overlay: bool = True,
        datalist_key: str | None = None,
        num_workers: int = 0,
        progress: bool = True,
        overrides: dict | None = None,
        dicom_seg: bool = False,
        frame: int | None = None,
        slice_axis: str = "axial",
        slice_index: int | None = None,
    ) -> None:
        """Run a bundle's trained (merged) model on one image, a folder (recursive), a CSV (image column) or a
        datalist JSON of DICOM, NIfTI, JPEG/PNG images. Writes to output_dir: segmentation masks (<stem>_seg.png,
        0/255 at the input's size, or <stem>_seg.nii.gz with the input's affine for NIfTI inputs) and overlays
        (<stem>_overlay.png); classification <stem>_pred.json (softmax probabilities and the predicted class;
        sigmoid and every class >= 0.5 for multi-label bundles, i.e. trained with a BCE loss); and report.csv /
        report.json (one row per input: status ok/skipped with the reason, time, outputs, model, version,
        adapter hash). Existing outputs are kept unless overwrite. Exit code 0: all ok, 3: some inputs were
        skipped (unreadable: see the report), 2: usage error (bad bundle, model file or input).

        Args:
            bundle: bundle folder, e.g. bundles/isic_apla.
            input: image file, folder, .csv or datalist .json.
            model_file: merged model (default <bundle>/models/model.pt).
            device: auto (CUDA if available, else CPU), cpu or cuda.
            tta: average the prediction over the image and its horizontal flip.
            sliding_window: segmentation at the original resolution (windows of img_size) instead of resizing.
            overlap: overlap of the sliding windows.
            include_patient_ids: add DICOM PatientID/PatientName to the report (never to file names).
            overlay: also write <stem>_overlay.png for segmentation.
            datalist_key: list of a datalist JSON (default: test/testing if present, else all lists).
            overrides: train.json keys to override when building the network, e.g. '{"img_size": 224}'.
            dicom_seg: also write <stem>_seg.dcm, a DICOM Segmentation object in the source's study, for
                DICOM inputs of segmentation bundles (needs the dicomseg extra: highdicom).
            frame: frame of multi-frame DICOMs (single-frame ones ignore it) and volume of 4D NIfTIs.
            slice_axis: slice orientation of 3D NIfTIs: axial, coronal or sagittal (canonical RAS+ axes).
            slice_index: slice of 3D NIfTIs along slice_axis (default: the middle one); NIfTI masks are
                written on that slice of the input's grid.
        """
        from .inference import infer

        code = infer(
            bundle, input, output_dir, model_file=model_file, batch_size=batch_size, device=device, tta=tta,
            sliding_window=sliding_window, overlap=overlap, overwrite=overwrite,
            include_patient_ids=include_patient_ids, overlay=overlay, datalist_key=datalist_key,
            num_workers=num_workers, progress=progress, overrides=dict(overrides or {}), dicom_seg=dicom_seg,
            frame=frame, slice_axis=slice_axis, slice_index=slice_index,
        )
        if code:
            raise SystemExit(code)


def main() -> None:
    fire.Fire(CLI, name="essa-monai")


if __name__ == "__main__":
    main()
