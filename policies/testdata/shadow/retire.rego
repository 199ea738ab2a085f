# A candidate set for shadow-mode tests: it extends the defaults with one refusal, retiring
# /retired, and allows nothing the defaults refuse (moltgate.custom can only take away).
package moltgate.custom

deny contains {"reason": "route_retired", "status": 410} if {
	input.request.path == "/retired"
}
