"""How tests judge "at once" without wall-clock margins a loaded `pytest -n auto` run can break.

A wait that fails at once (a bad pattern, a dead guest, a refused boot) is asserted to take under
AT_ONCE of its deadline: a quarter is seconds even for the shortest deadline used here, which no honest
failure comes near and no expired deadline can meet. Where the claim is which event ended a wait, the
competing event is moved far away instead (a grace stretched to many seconds), so the order is tested.
"""

AT_ONCE = 0.25
