"""A check of speedscope's file format, written from its published spec
(https://www.speedscope.app/file-format-schema.json, generated from
src/lib/file-format-spec.ts in jlfwong/speedscope), without a JSON Schema library:

    File            {$schema: const URL, shared: {frames: Frame[]}, profiles: Profile[],
                     name?: string, activeProfileIndex?: number, exporter?: string}
    Frame           {name: string, file?: string, line?: number, col?: number}
    Profile         SampledProfile | EventedProfile
    SampledProfile  {type: "sampled", name: string, unit: ValueUnit, startValue: number,
                     endValue: number, samples: number[][], weights: number[]}
    EventedProfile  {type: "evented", name, unit, startValue, endValue,
                     events: {type: "O" | "C", at: number, frame: number}[]}
    ValueUnit       "none" | "nanoseconds" | "microseconds" | "milliseconds" | "seconds" | "bytes"

Plus what the importer relies on: frame indices in range, one weight per sample.
"""

from __future__ import annotations

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
UNITS = {"none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"}


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(doc: dict) -> list[str]:
    """Every violation found (empty when the file is valid)."""
    errs: list[str] = []
    if not isinstance(doc, dict):
        return ["file: not an object"]
    if doc.get("$schema") != SCHEMA_URL:
        errs.append(f"$schema: must be {SCHEMA_URL}")
    for key, check in (("name", lambda v: isinstance(v, str)), ("exporter", lambda v: isinstance(v, str)),
                       ("activeProfileIndex", _num)):
        if key in doc and not check(doc[key]):
            errs.append(f"{key}: wrong type")
    shared = doc.get("shared")
    frames = shared.get("frames") if isinstance(shared, dict) else None
    if not isinstance(frames, list):
        errs.append("shared.frames: required array")
        frames = []
    for i, f in enumerate(frames):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            errs.append(f"shared.frames[{i}]: needs a string name")
            continue
        if "file" in f and not isinstance(f["file"], str):
            errs.append(f"shared.frames[{i}].file: not a string")
        for k in ("line", "col"):
            if k in f and not _num(f[k]):
                errs.append(f"shared.frames[{i}].{k}: not a number")
    profiles = doc.get("profiles")
    if not isinstance(profiles, list):
        return errs + ["profiles: required array"]
    if "activeProfileIndex" in doc and _num(doc["activeProfileIndex"]) and not (
            0 <= doc["activeProfileIndex"] < max(len(profiles), 1)):
        errs.append("activeProfileIndex: out of range")
    for i, p in enumerate(profiles):
        where = f"profiles[{i}]"
        if not isinstance(p, dict):
            errs.append(f"{where}: not an object")
            continue
        if not isinstance(p.get("name"), str):
            errs.append(f"{where}.name: required string")
        if p.get("unit") not in UNITS:
            errs.append(f"{where}.unit: must be one of {sorted(UNITS)}")
        for k in ("startValue", "endValue"):
            if not _num(p.get(k)):
                errs.append(f"{where}.{k}: required number")
        if p.get("type") == "sampled":
            samples, weights = p.get("samples"), p.get("weights")
            if not isinstance(samples, list) or not all(isinstance(s, list) for s in samples):
                errs.append(f"{where}.samples: required array of arrays")
                continue
            if not isinstance(weights, list) or not all(_num(w) for w in weights):
                errs.append(f"{where}.weights: required array of numbers")
                continue
            if len(weights) != len(samples):
                errs.append(f"{where}: {len(samples)} samples but {len(weights)} weights")
            for j, s in enumerate(samples):
                if not all(isinstance(x, int) and 0 <= x < len(frames) for x in s):
                    errs.append(f"{where}.samples[{j}]: frame index out of range")
                    break
        elif p.get("type") == "evented":
            for j, e in enumerate(p.get("events") or []):
                if not (isinstance(e, dict) and e.get("type") in ("O", "C") and _num(e.get("at"))
                        and isinstance(e.get("frame"), int) and 0 <= e["frame"] < len(frames)):
                    errs.append(f"{where}.events[{j}]: invalid")
                    break
        else:
            errs.append(f"{where}.type: must be 'sampled' or 'evented'")
    return errs
