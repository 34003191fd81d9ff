package local

import (
	"context"
	"fmt"
)

const usageVMResize = "ferry-plugin-local vm resize SITE NAME DISK_INDEX SIZE"

var cmdVMResize = &command{
	usage: usageVMResize,
	help: `Grows a disk to SIZE. Disks never shrink. Change tracking of the disk
resets: the next run compares digests instead of trusting change ids.`,
	nargs: 4,
	run:   runVMResize,
}

func runVMResize(ctx context.Context, c *cliCall) error {
	siteDir, name := c.args[0], c.args[1]
	disk, err := diskIndex(usageVMResize, c.args[2])
	if err != nil {
		return err
	}
	size, err := ParseSize(c.args[3])
	if err != nil {
		return usagef(usageVMResize, "vm resize: %v", err)
	}
	if err := checkFolder(siteDir, false); err != nil {
		return fmt.Errorf("resize vm %q: %w", name, err)
	}
	if err := newSite(siteDir).resize(ctx, name, disk, size); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "disk %d of vm %s is %s\n", disk, name, FormatSize(size))
	return err
}
