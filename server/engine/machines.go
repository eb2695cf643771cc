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
	m sync.Map // "id@version" -> *fsm.Machine
}

func cacheKey(id string, version uint32) string { return fmt.Sprintf("%s@%d", id, version) }

// machineVersion returns the compiled machine id at version (0: latest).
func (e *Engine) machineVersion(tx store.ReadTx, id string, version uint32) (*fsm.Machine, error) {
	if version != 0 {
		if m, ok := e.cache.m.Load(cacheKey(id, version)); ok {
			return m.(*fsm.Machine), nil
		}
	}
	rec, err := tx.Machine(id, version)
	if err != nil {
		return nil, fmt.Errorf("machine %q version %d: %w", id, version, err)
	}
	return e.compiled(rec)
}

func (e *Engine) compiled(rec store.MachineRecord) (*fsm.Machine, error) {
	key := cacheKey(rec.ID, rec.Version)
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
}

// DefineMachine compiles a definition and stores it as the machine's next
// version, unless a version with the same content exists: then that version
// is returned and created is false.
func (e *Engine) DefineMachine(ctx context.Context, file string, src []byte, actor string) (info MachineInfo, created bool, err error) {
	if len(src) == 0 {
		return MachineInfo{}, false, invalid("source", "must not be empty")
	}
	m, err := machines.Compile(file, src)
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
	return info, created, err
}

// GetMachine returns a machine version (0: latest) and the list of all its
// versions.
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
			return fmt.Errorf("machine %q version %d: %w", id, version, store.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return MachineInfo{}, nil, err
	}
	info.Machine, err = e.compiled(info.Record)
	return info, versions, err
}

// ListMachines returns the latest version of up to limit machines whose id
// sorts after after.
func (e *Engine) ListMachines(ctx context.Context, after string, limit int) ([]MachineInfo, error) {
	var recs []store.MachineRecord
	err := e.st.View(ctx, func(tx store.ReadTx) error {
		var err error
		recs, err = tx.Machines(after, limit)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]MachineInfo, 0, len(recs))
	for _, r := range recs {
		m, err := e.compiled(r)
		if err != nil {
			return nil, err
		}
		out = append(out, MachineInfo{Machine: m, Record: r})
	}
	return out, nil
}
