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
        run_dirs=expand("results/runs/{run_id}", run_id=RUNS),
        profile=shlex.quote(str(config["profile"])),
    shell:
        "{params.python} scripts/report.py --summary {input.summary} "
        "--per-sample {input.per_sample} --manifest {input.manifest} "
        "--figures-dir results/figures --tables-dir results/tables --runs {params.run_dirs} "
        "--profile {params.profile} --out {output.html} > {log} 2>&1"
