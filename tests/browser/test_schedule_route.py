"""GET /wan22/schedule on the real server: the numbers the sampler node's plot draws.

They must be the schedule code's own numbers (the browser never computes a schedule), with the
release's switch steps, the release values when use_release_defaults is on, and HTTP 400 naming
the value for bad input.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse

import pytest

from wan_core.schedule import wan_schedule

pytestmark = pytest.mark.server


def schedule(server, prefix: str = "", **query):
    return server.get_json(f"{prefix}/wan22/schedule?{urllib.parse.urlencode(query)}")


def schedule_error(server, **query) -> tuple[int, str]:
    try:
        server.get(f"/wan22/schedule?{urllib.parse.urlencode(query)}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["error"]
    raise AssertionError(f"{query} was accepted")


@pytest.mark.parametrize(
    ("shift", "boundary", "switch"),
    [(12.0, 0.875, 26), (5.0, 0.9, 15)],  # T2V-A14B and I2V-A14B release values
)
def test_release_values_switch_at_the_release_step(comfy_server, shift, boundary, switch):
    answer = schedule(comfy_server, steps=40, shift=shift, boundary=boundary, scheduler="wan", denoise=1.0,
                      use_release_defaults="false")
    expected = wan_schedule(40, shift)
    assert answer["switch_step"] == switch
    assert answer["timesteps"] == expected.timesteps.tolist()  # exactly the schedule module's
    assert answer["sigmas"] == expected.sigmas.tolist()
    assert (answer["shift"], answer["boundary"], answer["steps"]) == (shift, boundary, 40)
    assert answer["timesteps"][switch - 1] >= boundary * 1000 > answer["timesteps"][switch]


def test_the_api_prefixed_path_answers_the_same(comfy_server):
    query = {"steps": 40, "shift": 12, "boundary": 0.875}
    assert schedule(comfy_server, "/api", **query) == schedule(comfy_server, **query)


def test_use_release_defaults_takes_the_kinds_values_over_the_widgets(comfy_server):
    widgets = {"steps": 40, "shift": 3.0, "boundary": 0.5, "use_release_defaults": "true"}
    t2v = schedule(comfy_server, kind="t2v", **widgets)
    assert (t2v["shift"], t2v["boundary"], t2v["switch_step"]) == (12.0, 0.875, 26)
    assert t2v["release"] == {"shift": 12.0, "boundary": 0.875, "cfg": 4.0, "cfg_low_noise": 3.0, "steps": 40}
    i2v = schedule(comfy_server, kind="i2v", **widgets)
    assert (i2v["shift"], i2v["boundary"], i2v["switch_step"]) == (5.0, 0.9, 15)
    # TI2V-5B is one model: no boundary, no switch; its release shift.
    ti2v = schedule(comfy_server, kind="ti2v", **widgets)
    assert (ti2v["shift"], ti2v["boundary"], ti2v["switch_step"]) == (5.0, None, None)
    assert len(ti2v["timesteps"]) == 40


def test_use_release_defaults_with_an_unknown_model_says_the_widgets_are_ignored(comfy_server):
    answer = schedule(comfy_server, steps=40, shift=3.0, boundary=0.5, use_release_defaults="true")
    assert answer["timesteps"] is None and answer["switch_step"] is None
    assert answer["widgets_ignored"] == ["shift", "boundary", "cfg", "cfg_low_noise"]


def test_widgets_are_used_when_release_defaults_are_off_even_for_a_known_kind(comfy_server):
    answer = schedule(comfy_server, steps=40, shift=12, boundary=0.9, kind="t2v", use_release_defaults="false")
    expected = wan_schedule(40, 12.0).switch_step(0.9)
    assert expected != 26  # differs from the release boundary's switch
    assert (answer["boundary"], answer["switch_step"]) == (0.9, expected)


def test_partial_denoise_and_comfy_schedulers(comfy_server):
    partial = schedule(comfy_server, steps=20, shift=12, boundary=0.875, denoise=0.5)
    assert partial["timesteps"] == wan_schedule(20, 12.0, 0.5).timesteps.tolist()
    assert partial["switch_step"] == wan_schedule(20, 12.0, 0.5).switch_step(0.875)
    simple = schedule(comfy_server, steps=30, shift=8, boundary=0.875, scheduler="simple")
    assert len(simple["timesteps"]) == 30 and len(simple["sigmas"]) == 31
    assert simple["timesteps"] == sorted(simple["timesteps"], reverse=True)
    high = [t for t in simple["timesteps"] if t >= 875]
    assert simple["switch_step"] == len(high)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"steps": "forty"}, "steps"),
        ({"steps": 0}, "steps"),
        ({"shift": "-2"}, "shift"),
        ({"shift": "nan"}, "shift"),
        ({"boundary": "1.5"}, "boundary"),
        ({"denoise": "2"}, "denoise"),
        ({"scheduler": "nonsense"}, "scheduler"),
        ({"kind": "t2i"}, "kind"),
        ({"use_release_defaults": "maybe"}, "use_release_defaults"),
    ],
)
def test_bad_values_answer_400_naming_the_value(comfy_server, query, named):
    code, message = schedule_error(comfy_server, **query)
    assert code == 400
    assert message.startswith(named), message
    assert str(next(iter(query.values()))) in message
    # The server keeps serving.
    assert schedule(comfy_server, steps=40, shift=12, boundary=0.875)["switch_step"] == 26
