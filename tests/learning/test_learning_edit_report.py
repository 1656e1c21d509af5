"""``latent-reach edit``'s report judges where a card ended against the class the person asked for."""

from game.commands.edit import landing, move_line, report_dict
from game.learning.headless import MoveReport, MovesReport


def move(
    nearest: str, new_label: str, action: str = "relabel", ended_nearest_edit: bool = False
) -> MoveReport:
    return MoveReport(
        card=4,
        action=action,
        old_label="sun",
        new_label=new_label,
        repeats=2,
        predicted_before="sun",
        predicted_after=new_label,
        heldout_before=0.9,
        heldout_after=0.9,
        final_position=(0.0, 1.0, 2.0),
        nearest_class=nearest,
        ended_nearest_target=ended_nearest_edit,
        neighbours_kept=0.99,
        version=1,
        seconds=0.1,
        steps=5,
    )


def test_card_that_ended_in_the_requested_cluster_is_on_target():
    # The drop near moon was read as a relabel to star (overlapping clusters); the job judged the
    # card against star, so its own flag says False, but the card is where the person wanted it.
    m = move("moon", "star")
    text = move_line(m, "moon")
    assert "nearest centroid moon (the target;" in text and "NOT" not in text
    assert "read as relabel to star" in text
    (d,) = report_dict(MovesReport([m]), ["moon"])["moves"]
    assert (
        d["ended_nearest_target"] is True and d["target"] == "moon" and d["ended_nearest_edit_label"] is False
    )


def test_card_elsewhere_names_the_target():
    assert landing(move("sun", "moon", ended_nearest_edit=False), "moon") == "NOT the target moon"
    assert landing(move("moon", "moon", ended_nearest_edit=True), "moon") == "the target"
    assert "not trained" in landing(move("moon", "sun", action="none"), "moon")
