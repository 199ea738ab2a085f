package moltgate.custom_test

test_retired_refused if {
	{"reason": "route_retired", "status": 410} in data.moltgate.custom.deny with input as {"request": {"path": "/retired"}}
}

test_other_paths_not_refused if {
	count(data.moltgate.custom.deny) == 0 with input as {"request": {"path": "/retired/x"}}
}
