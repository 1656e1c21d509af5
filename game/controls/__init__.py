"""Input: desktop mouse/keyboard and VR controllers, both turned into ``Hand`` actions."""
