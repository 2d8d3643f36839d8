rule report_html:
    input:
        summary="results/metrics/summary.json",
        per_sample="results/metrics/per_sample.parquet",
        manifest="results/data/manifest.parquet",
        p1="results/figures/p1_weight_vs_t.png",
        spread="results/figures/weight_spread.png",
        metrics="results/figures/metrics_by_group.png",
        spectrograms="results/figures/spectrograms",
        table="results/tables/table2.md",
    output:
        html=report(
            "results/report/index.html",
            caption="../report/index.rst",
            category="Report",
        ),
        provenance="results/report/provenance.json",
    log:
        "results/logs/report/report.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        python=PYTHON,
        run_dirs=expand("results/runs/{run_id}", run_id=RUNS),
        profile=config["profile"],
    shell:
        "{params.python} scripts/report.py --summary {input.summary} --per-sample {input.per_sample} "
        "--manifest {input.manifest} --figures-dir results/figures --runs {params.run_dirs} "
        "--profile {params.profile} --out {output.html} > {log} 2>&1"
