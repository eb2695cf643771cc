package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// machineCache keeps compiled machine versions. A version never changes
// once defined, so entries never go stale.
type machineCache struct {
	m sync.Map // machineKey -> *fsm.Machine
}

// machineKey names one version of a machine.
type machineKey struct {
	id      string
	version uint32
}

func (k machineKey) String() string { return fmt.Sprintf("%s@%d", k.id, k.version) }

// machineVersion returns the compiled machine id at version (0: latest).
func (e *Engine) machineVersion(tx store.ReadTx, id string, version uint32) (*fsm.Machine, error) {
	if version == 0 {
		// Versions never change: the number names what the cache holds.
		v, err := tx.LatestMachineVersion(id)
		if err != nil {
			return nil, wrap(err, "machine %q version %d", id, version)
		}
		version = v
	}
	if m, ok := e.cache.m.Load(machineKey{id, version}); ok {
		return m.(*fsm.Machine), nil
	}
	rec, err := tx.Machine(id, version)
	if err != nil {
		return nil, wrap(err, "machine %q version %d", id, version)
	}
	return e.compiled(rec)
}

func (e *Engine) compiled(rec store.MachineRecord) (*fsm.Machine, error) {
	key := machineKey{rec.ID, rec.Version}
	if m, ok := e.cache.m.Load(key); ok {
		return m.(*fsm.Machine), nil
	}
	m, err := machines.Compile(rec.ID+".yaml", rec.Source)
	if err != nil {
		return nil, fmt.Errorf("stored machine %s no longer compiles: %v", key, err)
	}
	m.Version = rec.Version
	e.cache.m.Store(key, m)
	return m, nil
}

// MachineInfo is a compiled machine version with its stored record.
type MachineInfo struct {
	*fsm.Machine
	Record store.MachineRecord
	// Breaker is the machine's circuit breaker (shared by all its
	// versions). Only GetMachine fills it; elsewhere it is the zero value.
	Breaker fsm.Breaker
}

// DefineMachine compiles a definition and stores it as the machine's next
// version, unless a version with the same content exists: then that version
// is returned and created is false. A new version whose upgrade strategy is
// upgrade or abort then moves the machine's running instances (see
// sweepMachine); the definition stands even when that sweep fails, and the
// next Lead finishes it.
func (e *Engine) DefineMachine(ctx context.Context, file string, src []byte, actor string) (info MachineInfo, created bool, err error) {
	if len(src) == 0 {
		return MachineInfo{}, false, invalid("source", "must not be empty")
	}
	m, err := machines.CompileWith(file, src, e.resolver(ctx))
	if err != nil {
		return MachineInfo{}, false, err
	}
	fp := machines.Fingerprint(m)
	err = e.st.Update(ctx, func(tx store.Tx) error {
		created = false
		versions, err := tx.MachineVersions(m.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		for _, v := range versions {
			if v.Fingerprint == fp {
				info.Record = v
				return nil
			}
		}
		now := e.clock.Now()
		rec := store.MachineRecord{ID: m.ID, Version: uint32(len(versions)) + 1, Source: src, Fingerprint: fp, DefinedAt: now}
		if err := tx.PutMachine(rec); err != nil {
			return err
		}
		_, err = tx.AppendChange(fsm.Change{At: now, Actor: actor, Kind: fsm.ChangeMachineDefined, Machine: m.ID, Version: rec.Version})
		info.Record, created = rec, true
		return err
	})
	if err != nil {
		return MachineInfo{}, false, err
	}
	info.Machine, err = e.compiled(info.Record)
	if err != nil || !created {
		return info, created, err
	}
	// The caller hanging up must not leave the sweep half done.
	if err := e.sweepMachine(context.WithoutCancel(ctx), m.ID); err != nil {
		e.log.Error("upgrade sweep failed; the next start resumes it", "machine", m.ID, "version", info.Record.Version, "err", err)
	}
	return info, true, nil
}

// upgradeBatch bounds how many instances one transaction of an upgrade
// sweep moves, so a machine with many running instances cannot make a huge
// transaction.
const upgradeBatch = 256

// sweepUpgrades runs sweepMachine for every machine. Lead calls it, so a
// sweep cut short by a crash finishes at the next start. A machine whose
// sweep fails is logged and skipped.
func (e *Engine) sweepUpgrades(ctx context.Context) error {
	after := ""
	for {
		var recs []store.MachineRecord
		err := e.st.View(ctx, func(tx store.ReadTx) error {
			var err error
			recs, err = tx.Machines(after, upgradeBatch)
			return err
		})
		if err != nil {
			return err
		}
		for _, r := range recs {
			// One machine failing must not keep the others, or the
			// server, from running; the next start tries it again.
			if err := e.sweepMachine(ctx, r.ID); err != nil {
				if ctx.Err() != nil {
					return err
				}
				e.log.Error("upgrade sweep failed", "machine", r.ID, "err", err)
			}
		}
		if len(recs) < upgradeBatch {
			return nil
		}
		after = recs[len(recs)-1].ID
	}
}

// sweepMachine applies the latest version of machine id to its running
// instances on older versions, as that version's upgrade strategy says
// (fsm.Upgrade): with continue it does nothing. It pages through the
// machine's instances and moves each page in its own transaction, after
// the one that defined the version. It is idempotent: it touches only
// non-final instances on a version older than the latest, re-read in the
// transaction that moves them.
func (e *Engine) sweepMachine(ctx context.Context, id string) error {
	var (
		after             string
		latest            *fsm.Machine
		upgraded, aborted int
	)
	for {
		var ids []string
		var n int
		err := e.st.View(ctx, func(tx store.ReadTx) error {
			ids, n = nil, 0
			var err error
			if latest, err = e.machineVersion(tx, id, 0); err != nil || !sweeps(latest) {
				return err
			}
			page, err := tx.Instances(store.InstanceFilter{Machine: id}, after, upgradeBatch)
			if err != nil {
				return err
			}
			n = len(page)
			for _, in := range page {
				if in.Status != fsm.StatusFinal && in.Version < latest.Version {
					ids = append(ids, in.ID)
				}
				after = in.ID
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			var u, a int
			err = e.st.Update(ctx, func(tx store.Tx) error {
				u, a = 0, 0
				to, err := e.machineVersion(tx, id, 0)
				if err != nil || !sweeps(to) {
					return err
				}
				now := e.clock.Now()
				for _, iid := range ids {
					in, err := tx.Instance(iid)
					if err != nil {
						return fmt.Errorf("instance %q: %w", iid, err)
					}
					if in.Status == fsm.StatusFinal || in.Version >= to.Version {
						continue
					}
					m, err := e.machineVersion(tx, id, in.Version)
					if err != nil {
						return err
					}
					var out fsm.Instance
					if err := e.apply(tx, m, in, fsm.Upgrade{To: to}, now, SystemActor, &out); err != nil {
						return err
					}
					if out.Status == fsm.StatusFinal {
						a++
					} else {
						u++
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			upgraded, aborted = upgraded+u, aborted+a
		}
		if latest == nil || !sweeps(latest) || n < upgradeBatch {
			break
		}
	}
	if upgraded+aborted > 0 {
		e.log.Info("instances moved to a new machine version", "machine", id, "version", latest.Version,
			"strategy", latest.UpgradeStrategy, "upgraded", upgraded, "aborted", aborted)
	}
	return nil
}

// sweeps says whether m's running instances on older versions move to m.
func sweeps(m *fsm.Machine) bool {
	return m.UpgradeStrategy == fsm.UpgradeUpgrade || m.UpgradeStrategy == fsm.UpgradeAbort
}

// GetMachine returns a machine version (0: latest) with the machine's
// circuit breaker, and the list of all its versions.
func (e *Engine) GetMachine(ctx context.Context, id string, version uint32) (info MachineInfo, versions []uint32, err error) {
	if err := checkText("id", id, true, MaxIDBytes); err != nil {
		return MachineInfo{}, nil, err
	}
	err = e.st.View(ctx, func(tx store.ReadTx) error {
		all, err := tx.MachineVersions(id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if len(all) == 0 {
			return fmt.Errorf("machine %q: %w", id, store.ErrNotFound)
		}
		versions = versions[:0]
		for _, r := range all {
			versions = append(versions, r.Version)
			if r.Version == version || (version == 0 && r.Version == all[len(all)-1].Version) {
				info.Record = r
			}
		}
		if info.Record.ID == "" {
			return fmt.Errorf("machine %q version %d: %w", id, version, store.ErrNotFound) // version is not 0 here
		}
		info.Breaker, err = tx.Breaker(id)
		if err != nil {
			return fmt.Errorf("breaker of machine %q: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return MachineInfo{}, nil, err
	}
	info.Machine, err = e.compiled(info.Record)
	return info, versions, err
}

// ListMachines calls add with the latest version of each machine whose id
// sorts after after, in id order, until add returns false or none is left.
// Machines are read readChunk at a time, so the caller bounds what is in
// memory by what it keeps.
func (e *Engine) ListMachines(ctx context.Context, after string, add func(MachineInfo) bool) error {
	return e.st.View(ctx, func(tx store.ReadTx) error {
		for {
			recs, err := tx.Machines(after, readChunk)
			if err != nil {
				return err
			}
			for _, r := range recs {
				m, err := e.compiled(r)
				if err != nil {
					return err
				}
				if !add(MachineInfo{Machine: m, Record: r}) {
					return nil
				}
			}
			if len(recs) < readChunk {
				return nil
			}
			after = recs[len(recs)-1].ID
		}
	})
}
