rule manifest:
    output:
        manifest="results/data/manifest.parquet",
    log:
        "results/logs/data/manifest.log",
    conda:
        "../../envs/eisbach.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        python=PYTHON,
        data=as_arg(config["data"]),
        sample_rate=config["backend"]["sample_rate"],
    shell:
        "{params.python} scripts/data.py --config-json {params.data} "
        "--sample-rate {params.sample_rate} --out {output.manifest} > {log} 2>&1"
