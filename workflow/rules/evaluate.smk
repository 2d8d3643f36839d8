rule evaluate:
    input:
        index="results/samples/index.parquet",
        runs=expand("results/runs/{run_id}/run.json", run_id=RUNS),
    output:
        per_sample="results/metrics/per_sample.parquet",
        summary="results/metrics/summary.json",
    params:
        evaluate=as_arg(config["evaluate"]),
        run_dirs=expand("results/runs/{run_id}", run_id=RUNS),
    log:
        "results/logs/evaluate/evaluate.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{PYTHON} scripts/evaluate.py --index {input.index} --runs {params.run_dirs} "
        "--evaluate-json {params.evaluate} --out-dir results/metrics > {log} 2>&1"
