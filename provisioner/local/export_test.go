package local

// FindProcs exposes the lookup of the processes working in a gateway's folder.
func FindProcs(dir string) (leader int, others []int) { return findProcs(dir) }
