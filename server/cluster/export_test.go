package cluster

// SetWALSegmentSize sets the size of the log's segment files.
func SetWALSegmentSize(c *Config, size int) { c.SegmentSize = size }
