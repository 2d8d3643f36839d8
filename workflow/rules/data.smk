from eisbach.musiccaps import n_shards
from eisbach.ytdlp import COOKIES_ENV, redacted_config

DATA = config["data"]
DATA_SOURCE = DATA["source"]
# Known at DAG-build time: the demo is one shard; otherwise ceil(rows / data.shard_size), with
# rows counted in the CSV (or google/MusicCaps' 5,521) and capped by data.limit.
DATA_SHARDS = n_shards(DATA)
# The data section as one argv item, with the cookies path replaced by a reference: the path
# reaches the jobs through the environment, never a command line that `snakemake -p` prints.
DATA_ARG = as_arg(redacted_config(DATA))
DATA_CSV = (
    DATA.get("captions_csv")
    if DATA_SOURCE == "local" and DATA.get("captions_csv")
    else DATA.get("musiccaps_csv")
)
if DATA.get("cookies"):
    os.environ[COOKIES_ENV] = str(DATA["cookies"])
# Each shard's clips: a folder per shard, declared, so that they reach the manifest job where
# jobs share no filesystem (docs/cloud.md); that job gathers them into one declared folder,
# results/data/audio/<id>.wav, which the later jobs (latents, evaluate, figures, report) read.
DATA_SHARD_AUDIO = expand("results/data/shards/audio-{shard}", shard=range(DATA_SHARDS))
DATA_AUDIO = "results/data/audio"


rule data_metadata:
    input:
        csv=DATA_CSV or [],
    output:
        metadata="results/data/metadata.parquet",
    log:
        "results/logs/data/metadata.log",
    benchmark:
        "results/benchmarks/data_metadata/metadata.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        python=PYTHON,
        data=DATA_ARG,
    shell:
        "{params.python:q} scripts/data.py metadata --config-json {params.data:q} "
        "--out {output.metadata:q} > {log:q} 2>&1"


rule data_shard:
    input:
        metadata=[] if DATA_SOURCE == "demo" else "results/data/metadata.parquet",
    output:
        shard="results/data/shards/shard-{shard}.parquet",
        audio=directory("results/data/shards/audio-{shard}"),
    log:
        "results/logs/data/shard-{shard}.log",
    benchmark:
        "results/benchmarks/data_shard/shard-{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    threads: 1 if DATA_SOURCE == "demo" else DATA.get("workers", 4)
    resources:
        mem_mb=4000,
        runtime=240 if DATA_SOURCE == "musiccaps" else 60,
        ytdlp=1 if DATA_SOURCE == "musiccaps" else 0,
    params:
        python=PYTHON,
        data=DATA_ARG,
        sample_rate=config["backend"]["sample_rate"],
        shards=DATA_SHARDS,
        metadata=lambda wildcards, input: (
            ["--metadata", input.metadata] if input.metadata else []
        ),
        # results/data, wherever the job sees it (a storage plugin's local copy, say)
        data_dir=lambda wildcards, output: os.path.dirname(
            os.path.dirname(output.shard)
        ),
    shell:
        "{params.python:q} scripts/data.py shard --config-json {params.data:q} "
        "--sample-rate {params.sample_rate:q} {params.metadata:q} --shard {wildcards.shard:q} "
        "--shards {params.shards:q} --data-dir {params.data_dir:q} --audio-dir {output.audio:q} "
        "--out {output.shard:q} > {log:q} 2>&1"


rule manifest:
    input:
        shards=expand(
            "results/data/shards/shard-{shard}.parquet", shard=range(DATA_SHARDS)
        ),
        audio=DATA_SHARD_AUDIO,
    output:
        manifest="results/data/manifest.parquet",
        audio=directory(DATA_AUDIO),
    log:
        "results/logs/data/manifest.log",
    benchmark:
        "results/benchmarks/manifest/manifest.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        python=PYTHON,
        data=DATA_ARG,
        sample_rate=config["backend"]["sample_rate"],
    shell:
        "{params.python:q} scripts/data.py manifest --config-json {params.data:q} "
        "--sample-rate {params.sample_rate:q} --audio-dir {output.audio:q} "
        "--shard-audio {input.audio:q} --out {output.manifest:q} {input.shards:q} "
        "> {log:q} 2>&1"
