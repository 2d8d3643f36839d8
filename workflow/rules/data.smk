rule manifest:
    output:
        manifest="results/data/manifest.parquet",
    params:
        data=as_arg(config["data"]),
        sample_rate=config["backend"]["sample_rate"],
    log:
        "results/logs/data/manifest.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{PYTHON} scripts/data.py --config-json {params.data} "
        "--sample-rate {params.sample_rate} --out {output.manifest} > {log} 2>&1"
