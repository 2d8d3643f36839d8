rule report_html:
    input:
        summary="results/metrics/summary.json",
        per_sample="results/metrics/per_sample.parquet",
        manifest="results/data/manifest.parquet",
        figures=expand(
            "results/figures/{stem}.{ext}", stem=FIGURE_STEMS, ext=("png", "svg")
        ),
        spectrograms="results/figures/spectrograms",
        tables=expand(
            "results/tables/{name}.{ext}", name=TABLES, ext=("csv", "md", "tex")
        ),
        runs=expand("results/runs/{run_id}/run.json", run_id=RUNS),
        # the page's players: every sample and reference clip is copied into the report
        samples=SAMPLE_DIRS,
        audio=DATA_AUDIO,
    output:
        html="results/report/index.html",
        provenance="results/report/provenance.json",
        # the page with every file it links to, so that the zip of `snakemake --report`
        # holds a working copy of it
        site=report(
            directory("results/report"),
            htmlindex="index.html",
            caption="../report/index.rst",
            category="Report",
        ),
    log:
        "results/logs/report/report.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        python=PYTHON,
        run_dirs=run_dirs,
        figures_dir=lambda wildcards, input: os.path.dirname(input.figures[0]),
        tables_dir=lambda wildcards, input: os.path.dirname(input.tables[0]),
        profile=str(config["profile"]),
    shell:
        "{params.python:q} scripts/report.py --summary {input.summary:q} "
        "--per-sample {input.per_sample:q} --manifest {input.manifest:q} "
        "--figures-dir {params.figures_dir:q} --tables-dir {params.tables_dir:q} "
        "--runs {params.run_dirs:q} --profile {params.profile:q} --out {output.html:q} "
        "> {log:q} 2>&1"
