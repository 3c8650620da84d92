"""spikeloop list [WHAT] [--json]: what a launch file can name, with the keys each takes.

WHAT is one of: sources, stages, networks, decoders, outputs, sinks, motors (default: all). Every entry is
read from the registry the launch file is checked against (pipeline.app.sources.SOURCE_KEYS,
pipeline.stages.STAGES, pipeline.snn.builders.BUILDERS, pipeline.decoders.DECODERS and the classifier, the
bin-level decoders, the [output] mappings, the sinks and the motor drivers), so the list is what the code
accepts. Every key reads ``key: <what a launch file gives>, required | optional | default <TOML value>: help``
in the launch schema's words (pipeline.core.schema); keys read from a class or function signature take
their help from its docstring's ``name: help`` lines.
"""
from __future__ import annotations

import inspect
import json

from pipeline.core.schema import REQUIRED, default_text, key_text, signature_keys, toml_value

CATEGORIES = ("sources", "stages", "networks", "decoders", "outputs", "sinks", "motors")


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("list", help=summary, description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=CATEGORIES, metavar="WHAT",
                        help=f"one of {', '.join(CATEGORIES)} (default: all)")
    parser.add_argument("--json", action="store_true", help="print {category: {name: {key: description}}} as JSON")
    parser.set_defaults(func=run)


def _key_text(key) -> str:
    """A pipeline.core.schema.Key as ``<expectation>, <default>: help``."""
    return key_text(key.expectation(), default_text(key.default, key.default is REQUIRED), key.help)


def _first_line(obj) -> str:
    return (inspect.getdoc(obj) or "").split("\n")[0]


def catalogue() -> dict[str, dict[str, dict]]:
    """{category: {name: {"about": one line, "keys": {key: description}}}} from the registries."""
    from devices.motors import PROTOCOLS
    from devices.motors.registry import driver_class
    from pipeline.app.launch import BIN_DECODER_KEYS, CLASSIFIER_KEYS, OUTPUT_KEYS, SINK_KEYS
    from pipeline.app.sources import SOURCE_KEYS
    from pipeline.decoders import DECODERS
    from pipeline.decoders.bci.factory import DECODER_KINDS
    from pipeline.snn.builders import BUILDERS
    from pipeline.stages import STAGES

    stages = {}
    for name, config in sorted(STAGES.items()):
        info = config.describe()
        stages[name] = {"about": info.summary, "keys": {
            p.name: key_text(p.expectation, default_text(p.default, p.required), p.help, p.unit) for p in info.params}}
    decoders = {name: {"about": "spike decoder (with a [network]): " + _first_line(cls),
                       "keys": signature_keys(cls, ("n_outputs",))} for name, cls in sorted(DECODERS.items())}
    decoders["classifier"] = {"about": "spike decoder (with a [network] file = a model .npz and a samples source): "
                                       "a class per sample, decided early once the evidence is enough",
                               "keys": {k: _key_text(v) for k, v in CLASSIFIER_KEYS.items()}}
    decoders = dict(sorted(decoders.items()))
    bin_keys = {k: _key_text(v) for k, v in BIN_DECODER_KEYS.items() if k != "type"}
    for kind in DECODER_KINDS:
        decoders[kind] = {"about": "bin-level decoder (neural sources, no [network]): type = "
                                   f"{toml_value(kind)} fitted at start, or model = a fitted .npz", "keys": bin_keys}
    return {
        "sources": {name: {"about": f"[source] type = {toml_value(name)}", "keys": {k: _key_text(v) for k, v in keys.items()}}
                    for name, keys in SOURCE_KEYS.items()},
        "stages": stages,
        "networks": {name: {"about": builder.doc, "keys": {k: _key_text(v) for k, v in builder.params.items()}}
                     for name, builder in sorted(BUILDERS.items())},
        "decoders": decoders,
        "outputs": {name: {"about": "[output] of a bin-level decoder: decoded kinematics -> command",
                           "keys": {k: _key_text(v) for k, v in keys.items()}} for name, keys in OUTPUT_KEYS.items()},
        "sinks": {name: {"about": f"[sinks.<label>] type = {toml_value(name)}", "keys": {k: _key_text(v) for k, v in keys.items()}}
                  for name, keys in SINK_KEYS.items()},
        "motors": {name: {"about": "[sinks.<label>.driver] options of this protocol (spikeloop motor --opt)",
                          "keys": signature_keys(driver_class(name), ("ids",))} for name in sorted(PROTOCOLS)},
    }


def run(args) -> int:
    data = catalogue()
    if args.what:
        data = {args.what: data[args.what]}
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    for category, entries in data.items():
        print(f"{category}:")
        for name, entry in entries.items():
            print(f"  {name}: {entry['about']}")
            for key, text in entry["keys"].items():
                print(f"      {key}: {text}")
    return 0
