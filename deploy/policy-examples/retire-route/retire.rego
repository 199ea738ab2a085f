# An example extension, and the candidate set of the shadow-mode tests: it retires /retired
# (410 route_retired) and allows nothing the defaults refuse (moltgate.custom only takes away).
package moltgate.custom

deny contains {"reason": "route_retired", "status": 410} if {
	input.request.path == "/retired"
}
