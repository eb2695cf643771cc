package main

import (
	"errors"
	"fmt"

	"github.com/dfsmr/dfsmr/client"
	"github.com/spf13/cobra"
)

func (a *app) backupCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent snapshot of the server's database to FILE",
		Long: `Backup copies the server's bbolt database to FILE while the server keeps
serving: a consistent snapshot as of one moment, with every write the server
acknowledged before it. The copy arrives in a temporary file next to FILE, is
checked against the size and SHA-256 the server sent, synced and renamed over
FILE, so FILE is never left half-written.

An existing FILE is refused unless --force. A FILE that is a database in use
(a bbolt file whose lock a process holds, such as the server's own
database) is refused even with --force: renaming the copy over a live
database would lose every write acknowledged after the snapshot. Nothing is
written then.

To restore, stop the server and start it on the copy: dfsmrd --db FILE.`,
		Example: "  dfsmr backup /var/backups/dfsmr-$(date +%F).db",
		Args:    args(cobra.ExactArgs(1)),
		RunE: runE(func(cmd *cobra.Command, argv []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			info, err := c.BackupFile(a.ctx, argv[0], client.BackupOptions{Overwrite: force})
			if errors.Is(err, client.ErrTargetExists) {
				return fmt.Errorf("%w; add --force to replace it", err)
			}
			if err != nil {
				return err
			}
			if a.json() {
				return a.printValue(map[string]any{"file": argv[0], "size": info.Size, "sha256": info.SHA256, "headSeq": info.HeadSeq})
			}
			_, err = fmt.Fprintf(a.stdout, "%s: %d bytes, changelog head %d, sha256 %s\n", clean(argv[0]), info.Size, info.HeadSeq, info.SHA256)
			return err
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing FILE (never a database in use)")
	return cmd
}
