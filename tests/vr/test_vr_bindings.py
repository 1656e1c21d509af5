"""Every shipped binding file has the shape SteamVR's binding schema expects, against our manifest.

SteamVR rejects (or silently ignores) a binding whose controller type, paths, modes or inputs do
not fit; the person then has no input at all. Checked here for each file the manifest names:
the controller type matches its manifest entry; only action sets of the manifest; only the
sections SteamVR knows; each source path is a component that controller type has (its SteamVR
input profile), each mode a SteamVR mode and each input one that mode offers, feeding an action
of the right type; poses and haptics on existing paths and of pose/vibration actions; every
action the controls need bound on both hands.
"""

from __future__ import annotations

import json
import re

import pytest

from game.vr.openvr_backend import MANIFEST

# Components of each controller's SteamVR input profile (/user/hand/*/input/<component>).
COMPONENTS = {
    "knuckles": {"trigger", "grip", "thumbstick", "trackpad", "a", "b", "system"},
    "oculus_touch": {"trigger", "grip", "joystick", "a", "b", "x", "y", "application_menu", "system"},
    "vive_controller": {"trigger", "grip", "trackpad", "application_menu", "system"},
    "holographic_controller": {"trigger", "grip", "joystick", "trackpad", "application_menu", "system"},
    "vive_cosmos_controller": {"trigger", "grip", "joystick", "a", "b", "x", "y", "bumper", "system"},
    "generic": {"trigger", "grip", "joystick", "trackpad", "application_menu", "a", "b", "system"},
}
# Hand-specific buttons (Touch and Cosmos: A/B on the right, X/Y on the left).
ONE_HAND = {"a": "right", "b": "right", "x": "left", "y": "left"}
HANDED = {"oculus_touch", "vive_cosmos_controller"}
# SteamVR binding modes and the inputs each offers, with the action type each input feeds.
MODES = {
    "button": {"click": "boolean", "touch": "boolean"},
    "trigger": {"click": "boolean", "pull": "vector1", "touch": "boolean"},
    "joystick": {"position": "vector2", "click": "boolean", "touch": "boolean"},
    "trackpad": {"position": "vector2", "click": "boolean", "touch": "boolean"},
    "grab": {"grab": "boolean", "held": "boolean"},
    "dpad": {d: "boolean" for d in ("north", "south", "east", "west", "center")},
    "scroll": {"scroll": "vector2"},
    "toggle_button": {"click": "boolean"},
}
SECTIONS = {"sources", "poses", "haptics", "chords", "skeleton"}
POSE_PATH = re.compile(r"^/user/hand/(left|right)/pose/(raw|tip|base|handgrip)$")
HAPTIC_PATH = re.compile(r"^/user/hand/(left|right)/output/haptic$")
SOURCE_PATH = re.compile(r"^/user/hand/(left|right)/input/([a-z_]+)$")
NEEDED_BOTH_HANDS = ("in/hand_pose", "in/grip", "in/trigger", "in/move", "out/haptic")
NEW_CONTROLLERS = ("holographic_controller", "vive_cosmos_controller", "generic")


def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def binding_problems(
    binding: dict, controller_type: str, actions: dict[str, str], sets: set[str]
) -> list[str]:
    """Everything about one binding file that SteamVR's schema would not accept (empty: fine)."""
    problems: list[str] = []
    if binding.get("controller_type") != controller_type:
        problems.append(f"controller_type {binding.get('controller_type')!r} != {controller_type!r}")
    components = COMPONENTS.get(controller_type)
    if components is None:
        return problems + [f"unknown controller type {controller_type!r}"]
    bound: dict[str, set[str]] = {}
    for set_name, body in binding.get("bindings", {}).items():
        if set_name not in sets:
            problems.append(f"action set {set_name} is not in the manifest")
        for section in set(body) - SECTIONS:
            problems.append(f"{set_name}: unknown section {section!r}")
        for pose in body.get("poses", []):
            m = POSE_PATH.match(pose.get("path", ""))
            if not m or actions.get(pose.get("output")) != "pose":
                problems.append(f"pose {pose}")
            else:
                bound.setdefault(pose["output"], set()).add(m.group(1))
        for haptic in body.get("haptics", []):
            m = HAPTIC_PATH.match(haptic.get("path", ""))
            if not m or actions.get(haptic.get("output")) != "vibration":
                problems.append(f"haptic {haptic}")
            else:
                bound.setdefault(haptic["output"], set()).add(m.group(1))
        for source in body.get("sources", []):
            m = SOURCE_PATH.match(source.get("path", ""))
            if not m:
                problems.append(f"source path {source.get('path')!r}")
                continue
            hand, component = m.groups()
            if component not in components:
                problems.append(f"{controller_type} has no {component!r} ({source['path']})")
            if controller_type in HANDED and ONE_HAND.get(component, hand) != hand:
                problems.append(f"{controller_type}: {component!r} is on the {ONE_HAND[component]} hand")
            mode = source.get("mode")
            if mode not in MODES:
                problems.append(f"{source['path']}: unknown mode {mode!r}")
                continue
            if not source.get("inputs"):
                problems.append(f"{source['path']}: no inputs")
            for name, target in source.get("inputs", {}).items():
                want = MODES[mode].get(name)
                action = target.get("output")
                if want is None:
                    problems.append(f"{source['path']}: mode {mode} has no input {name!r}")
                elif action not in actions:
                    problems.append(f"{source['path']}: {action!r} is not in the manifest")
                elif actions[action] != want:
                    problems.append(f"{source['path']}/{name}: {action} is {actions[action]}, not {want}")
                else:
                    bound.setdefault(action, set()).add(hand)
    prefix = next(iter(sets), "")
    for needed in NEEDED_BOTH_HANDS:
        hands = bound.get(f"{prefix}/{needed}", set())
        if hands != {"left", "right"}:
            problems.append(f"{needed} bound on {sorted(hands) or 'no'} hand(s), not both")
    return problems


def test_manifest_names_a_binding_for_each_controller_including_wmr_cosmos_and_generic():
    m = manifest()
    types = [entry["controller_type"] for entry in m["default_bindings"]]
    assert len(types) == len(set(types))
    for needed in ("knuckles", "oculus_touch", "vive_controller", *NEW_CONTROLLERS):
        assert needed in types
    action_types = {a["name"]: a["type"] for a in m["actions"]}
    assert set(action_types.values()) <= {
        "boolean",
        "vector1",
        "vector2",
        "vector3",
        "pose",
        "vibration",
        "skeleton",
    }
    for action in m["actions"]:
        assert action.get("requirement", "mandatory") in ("mandatory", "suggested", "optional")
    assert all(entry["usage"] in ("single", "leftright", "hidden") for entry in m["action_sets"])


@pytest.mark.parametrize("entry", manifest()["default_bindings"], ids=lambda e: e["controller_type"])
def test_binding_file_fits_the_schema(entry):
    m = manifest()
    actions = {a["name"]: a["type"] for a in m["actions"]}
    sets = {s["name"] for s in m["action_sets"]}
    path = MANIFEST.parent / entry["binding_url"]
    assert path.is_file(), f"{entry['binding_url']} is named in the manifest but not shipped"
    problems = binding_problems(json.loads(path.read_text()), entry["controller_type"], actions, sets)
    assert not problems, "\n".join(problems)


def test_the_check_finds_broken_bindings():
    m = manifest()
    actions = {a["name"]: a["type"] for a in m["actions"]}
    sets = {s["name"] for s in m["action_sets"]}
    good = json.loads((MANIFEST.parent / "bindings_holographic_controller.json").read_text())
    assert binding_problems(good, "holographic_controller", actions, sets) == []

    def broken(change) -> list[str]:
        b = json.loads(json.dumps(good))
        change(b["bindings"]["/actions/latent"]["sources"], b)
        return binding_problems(b, "holographic_controller", actions, sets)

    assert broken(lambda s, b: s[0].update(path="/user/hand/left/input/thumbstick"))  # a Knuckles name
    assert broken(lambda s, b: s[0].update(mode="slider"))
    assert broken(lambda s, b: s[1]["inputs"].update(pull={"output": "/actions/latent/in/grip"}))  # bool
    assert broken(lambda s, b: s[1]["inputs"].update(click={"output": "/actions/latent/in/fly"}))
    assert broken(lambda s, b: b.update(controller_type="knuckles"))
    assert broken(lambda s, b: s.__delitem__(slice(0, 4)))  # the left hand loses grip, trigger, move
