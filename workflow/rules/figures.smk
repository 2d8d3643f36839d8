# The figures of eisbach.figures.FIGURES (tests/test_figures.py checks the two lists agree),
# each with its caption in workflow/report/<stem>.rst.
FIGURE_STEMS = [
    "p1_weight_vs_t",
    "p2_lambda_sweep",
    "p3_consistency_vs_diversity",
    "p4_pca_coverage",
    "p5_corr_h_loss",
    "entropy_vs_logsnr",
    "ssm_grid",
    "training_curves",
    "weight_spread",
    "metrics_by_group",
]
TABLES = {
    "table2": "Claims",
    "predictions": "Claims",
    "controls": "Controls",
}


FIGURE_OUTPUTS = {
    f"{stem}_{ext}": report(
        f"results/figures/{stem}.{ext}",
        caption=f"../report/{stem}.rst",
        category="Figures",
        subcategory=ext.upper(),
        labels={"figure": stem, "format": ext},
    )
    for stem in FIGURE_STEMS
    for ext in ("png", "svg")
}
TABLE_OUTPUTS = {
    f"{name}_{ext}": report(
        f"results/tables/{name}.{ext}",
        caption=f"../report/{name}.rst",
        category=category,
        subcategory=name,
        labels={"table": name, "format": ext},
    )
    for name, category in TABLES.items()
    for ext in ("csv", "md", "tex")
} | {f"{name}_provenance": f"results/tables/{name}.provenance.json" for name in TABLES}


rule figures:
    input:
        summary="results/metrics/summary.json",
        per_sample="results/metrics/per_sample.parquet",
        per_prompt="results/metrics/per_prompt.parquet",
        latents=LATENTS_DIR,
        runs=expand("results/runs/{run_id}/train_log.parquet", run_id=RUNS),
        run_json=expand("results/runs/{run_id}/run.json", run_id=RUNS),
        samples=SAMPLE_DIRS,
        audio=DATA_AUDIO,
    output:
        **FIGURE_OUTPUTS,
        **TABLE_OUTPUTS,
        spectrograms=directory("results/figures/spectrograms"),
    log:
        "results/logs/figures/figures.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        python=PYTHON,
        run_dirs=run_dirs,
        latents_manifest=lambda wildcards, input: os.path.join(
            input.latents, "latents_manifest.json"
        ),
        figures_dir=lambda wildcards, output: os.path.dirname(output.p1_weight_vs_t_png),
        tables_dir=lambda wildcards, output: os.path.dirname(output.table2_csv),
        # evaluate's analyses, to reuse their SSMs: a cache beside its outputs, not one of them;
        # where jobs share no filesystem it is absent and the figures compute them again
        analysis_cache=lambda wildcards, input: os.path.join(
            os.path.dirname(input.summary), "cache", "analyses"
        ),
    shell:
        "{params.python:q} scripts/figures.py --summary {input.summary:q} "
        "--per-sample {input.per_sample:q} --per-prompt {input.per_prompt:q} "
        "--latents-manifest {params.latents_manifest:q} --runs {params.run_dirs:q} "
        "--figures-dir {params.figures_dir:q} --tables-dir {params.tables_dir:q} "
        "--analysis-cache {params.analysis_cache:q} > {log:q} 2>&1"
