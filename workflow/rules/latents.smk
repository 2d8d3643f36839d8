# The whole store is the declared output (shards, text table, text encoder, latents_manifest.json),
# so that it travels through storage where jobs share no filesystem; its readers take the folder.
# Shards are encoded one by one in a work folder beside it (recorded in latents_progress.json
# there) and then published into it: Snakemake empties a declared folder before a rerun, and the
# work folder lets a rerun after a failure or kill resume at the first unfinished shard.
rule latents:
    input:
        manifest="results/data/manifest.parquet",
        audio=DATA_AUDIO,
    output:
        store=directory(LATENTS_DIR),
    log:
        f"results/logs/latents/{BACKEND}.log",
    benchmark:
        f"results/benchmarks/latents/{BACKEND}.tsv"
    threads: 1
    resources:
        mem_mb=stage_resources("latents")["mem_mb"],
        runtime=stage_resources("latents")["runtime"],
        gpu=stage_resources("latents")["gpu"],
    params:
        python=PYTHON,
        backend=as_arg(config["backend"]),
        latents=section_arg("latents"),
        work_dir=lambda wildcards, output: os.path.join(
            os.path.dirname(output.store), f".encoding-{BACKEND}"
        ),
    shell:
        "{params.python:q} -m eisbach.gpu_slots --gpus {resources.gpu:q} -- "
        "scripts/latents.py --manifest {input.manifest:q} "
        "--backend-json {params.backend:q} --latents-json {params.latents:q} "
        "--out-dir {output.store:q} --work-dir {params.work_dir:q} --threads {threads:q} "
        "> {log:q} 2>&1"
