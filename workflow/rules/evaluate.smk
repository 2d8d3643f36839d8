rule evaluate:
    input:
        index="results/samples/index.parquet",
        manifest="results/data/manifest.parquet",
        runs=expand("results/runs/{run_id}/run.json", run_id=RUNS),
        heldout=expand("results/runs/{run_id}/heldout_loss.parquet", run_id=RUNS),
        logs=expand("results/runs/{run_id}/train_log.parquet", run_id=RUNS),
        samples=SAMPLE_DIRS,
        audio=DATA_AUDIO,
    output:
        per_sample="results/metrics/per_sample.parquet",
        per_prompt="results/metrics/per_prompt.parquet",
        reference="results/metrics/reference.parquet",
        summary="results/metrics/summary.json",
    log:
        "results/logs/evaluate/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate/evaluate.tsv"
    threads: config["evaluate"].get("threads", 1)
    resources:
        mem_mb=stage_resources("evaluate")["mem_mb"],
        runtime=stage_resources("evaluate")["runtime"],
    params:
        python=PYTHON,
        evaluate=section_arg("evaluate"),
        run_dirs=run_dirs,
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "{params.python:q} scripts/evaluate.py --index {input.index:q} --manifest {input.manifest:q} "
        "--runs {params.run_dirs:q} --evaluate-json {params.evaluate:q} "
        "--out-dir {params.out_dir:q} --threads {threads:q} > {log:q} 2>&1"
