// Package dashboard reads the Grafana dashboard that ships in
// the Helm chart (deploy/helm/scale/files): it checks its shape and lists the metrics its queries
// read, so that tests can hold them against what the services export.
package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// File is the dashboard's path from the repository's root.
const File = "deploy/helm/scale/files/scale-dashboard.json"

type query struct {
	Expr  string `json:"expr"`
	RefID string `json:"refId"`
}

type document struct {
	UID         string `json:"uid"`
	Title       string `json:"title"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []struct {
		ID      int     `json:"id"`
		Title   string  `json:"title"`
		Targets []query `json:"targets"`
	} `json:"panels"`
}

var metricName = regexp.MustCompile(`\bscale_[a-z_]+`)

// Metrics reads the dashboard at root/File and returns every metric its
// panels and annotations query (a histogram's _bucket, _sum and _count
// named by the histogram), sorted. A dashboard that is not JSON, has no uid
// or title, repeats a panel id or a query's refId within a panel, or has a
// panel without a query is an error.
func Metrics(root string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(root, File))
	if err != nil {
		return nil, err
	}
	var d document
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&d); err != nil {
		return nil, fmt.Errorf("%s: %w", File, err)
	}
	if d.UID == "" || d.Title == "" {
		return nil, fmt.Errorf("%s: no uid or title", File)
	}
	var exprs []string
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			return nil, fmt.Errorf("%s: panel id %d twice", File, p.ID)
		}
		ids[p.ID] = true
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if q.Expr == "" || q.RefID == "" || refs[q.RefID] {
				return nil, fmt.Errorf("%s: panel %q: a query without an expression or with a repeated refId", File, p.Title)
			}
			refs[q.RefID] = true
			exprs = append(exprs, q.Expr)
		}
		if len(p.Targets) == 0 {
			return nil, fmt.Errorf("%s: panel %q has no query", File, p.Title)
		}
	}
	for _, a := range d.Annotations.List {
		exprs = append(exprs, a.Expr)
	}
	var names []string
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if strings.HasSuffix(n, "_seconds"+suffix) {
					n = strings.TrimSuffix(n, suffix)
				}
			}
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}
