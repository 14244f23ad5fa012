"""Read an offline W&B run (``offline-run-*/run-<id>.wandb``): the records ``wandb sync`` uploads.

The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each with a 7-byte header (CRC32, length, type: 1 full, 2 first,
3 middle, 4 last) holding serialised ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = HEADER.unpack_from(data, 0)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is no W&B transaction log"
    out, pending, offset = [], b"", HEADER.size
    while offset + CHUNK.size <= len(data):
        room = BLOCK - offset % BLOCK
        if room < CHUNK.size:  # block trailer: padding
            offset += room
            continue
        _, length, kind = CHUNK.unpack_from(data, offset)
        if length == 0 and kind == 0:
            break
        payload = data[offset + CHUNK.size: offset + CHUNK.size + length]
        offset += CHUNK.size + length
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def offline_run(path: Path) -> dict:
    """Run name, group, job type, config (nested, values decoded) and summary of one offline run."""
    run, config, summary = None, {}, {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({item.key: json.loads(item.value_json) for item in run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            summary.update({"/".join(item.nested_key) or item.key: json.loads(item.value_json)
                            for item in record.summary.update})
    assert run is not None, f"{path} holds no run record"
    return {"name": run.display_name, "group": run.run_group, "job_type": run.job_type,
            "config": {k: v for k, v in config.items() if k != "_wandb"}, "summary": summary}
