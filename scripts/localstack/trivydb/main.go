// Command trivydb writes a small Trivy vulnerability database (schema 2) from the fixture advisories in
// tests/fixtures/trivy/advisories.json, so that the tests scan their images with the real Trivy, fully offline.
//
//	trivydb -fixtures tests/fixtures/trivy/advisories.json -cache-dir DIR
//
// writes DIR/db/trivy.db and DIR/db/metadata.json; `trivy --cache-dir DIR --skip-db-update ...` then reads them.
// It uses trivy-db's own writers (the version Trivy v0.74.0 pins, see go.mod), so the buckets and the value
// encodings are exactly those Trivy reads: advisories at <bucket>/<package>/<vulnerability id>, the data-source
// bucket (whose ID picks the vendor severity), the vulnerability bucket.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/aquasecurity/trivy-db/pkg/metadata"
	"github.com/aquasecurity/trivy-db/pkg/types"
	bolt "go.etcd.io/bbolt"
)

// fixtures is the shape of advisories.json (documented in its "comment").
type fixtures struct {
	DataSources     map[string]types.DataSource `json:"data_sources"`
	Vulnerabilities []vulnerability             `json:"vulnerabilities"`
}

type vulnerability struct {
	ID          string     `json:"id"`
	Title       string     `json:"title"`
	Description string     `json:"description"`
	Severity    string     `json:"severity"`
	Published   *time.Time `json:"published"`
	References  []string   `json:"references"`
	Control     bool       `json:"control"` // a negative control: must not be reported (not used here)
	Advisories  []advisory `json:"advisories"`
}

type advisory struct {
	Bucket             string   `json:"bucket"`  // "debian 12", "pip::GitHub Security Advisory Pip", ...
	Package            string   `json:"package"` // the source package for Debian, the normalised name for pip
	FixedVersion       string   `json:"fixed_version"`
	Status             string   `json:"status"` // for an unfixed one: "affected", "will_not_fix", ...
	VulnerableVersions []string `json:"vulnerable_versions"`
	PatchedVersions    []string `json:"patched_versions"`
}

func main() {
	fixturePath := flag.String("fixtures", "", "the fixture advisories (JSON)")
	cacheDir := flag.String("cache-dir", "", "Trivy's --cache-dir; the database goes to its db/ directory")
	flag.Parse()
	if *fixturePath == "" || *cacheDir == "" {
		fmt.Fprintln(os.Stderr, "usage: trivydb -fixtures FILE -cache-dir DIR")
		os.Exit(2)
	}
	if err := build(*fixturePath, filepath.Join(*cacheDir, "db")); err != nil {
		fmt.Fprintf(os.Stderr, "trivydb: %v\n", err)
		os.Exit(1)
	}
}

func load(path string) (fixtures, error) {
	var f fixtures
	data, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("%s: %w", path, err)
	}
	for _, v := range f.Vulnerabilities {
		if _, err := types.NewSeverity(v.Severity); err != nil {
			return f, fmt.Errorf("%s: %s: %w", path, v.ID, err)
		}
		for _, a := range v.Advisories {
			if _, ok := f.DataSources[a.Bucket]; !ok {
				return f, fmt.Errorf("%s: %s: bucket %q has no entry in data_sources", path, v.ID, a.Bucket)
			}
			if a.Status != "" && types.NewStatus(a.Status) == types.StatusUnknown {
				return f, fmt.Errorf("%s: %s: unknown status %q (one of %v)", path, v.ID, a.Status, types.Statuses)
			}
		}
	}
	return f, nil
}

func build(fixturePath, dbDir string) error {
	f, err := load(fixturePath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dbDir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(db.Path(dbDir)) // always from scratch
	if err := db.Init(dbDir); err != nil {
		return fmt.Errorf("open %s: %w", db.Path(dbDir), err)
	}
	defer db.Close()
	dbc := db.Config{}
	err = dbc.BatchUpdate(func(tx *bolt.Tx) error {
		buckets := make([]string, 0, len(f.DataSources))
		for bucket := range f.DataSources {
			buckets = append(buckets, bucket)
		}
		sort.Strings(buckets)
		for _, bucket := range buckets {
			if err := dbc.PutDataSource(tx, bucket, f.DataSources[bucket]); err != nil {
				return err
			}
		}
		for _, v := range f.Vulnerabilities {
			severity, _ := types.NewSeverity(v.Severity)
			vendor := types.VendorSeverity{}
			for _, a := range v.Advisories {
				vendor[f.DataSources[a.Bucket].ID] = severity
				adv := &types.Advisory{ // a pointer: its MarshalJSON stores Status as the integer Trivy reads
					FixedVersion:       a.FixedVersion,
					Status:             types.NewStatus(a.Status),
					VulnerableVersions: a.VulnerableVersions,
					PatchedVersions:    a.PatchedVersions,
				}
				if err := dbc.PutAdvisory(tx, []string{a.Bucket, a.Package}, v.ID, adv); err != nil {
					return err
				}
			}
			vuln := types.Vulnerability{
				Title:          v.Title,
				Description:    v.Description,
				Severity:       v.Severity,
				VendorSeverity: vendor,
				References:     v.References,
				PublishedDate:  v.Published,
			}
			if err := dbc.PutVulnerability(tx, v.ID, vuln); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", db.Path(dbDir), err)
	}
	now := time.Now().UTC()
	// A far-future NextUpdate: Trivy never considers this database stale (and never downloads one: the scans
	// also pass --skip-db-update).
	meta := metadata.Metadata{Version: db.SchemaVersion, NextUpdate: time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC),
		UpdatedAt: now, DownloadedAt: now}
	return metadata.NewClient(dbDir).Update(meta)
}
