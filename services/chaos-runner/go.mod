module github.com/scale-dev/scale/services/chaos-runner

go 1.26.8

require (
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3
	gopkg.in/yaml.v3 v3.0.1
)

require golang.org/x/text v0.43.0

// The pipeline's internal packages (launcher, natsembed, pglocal, store, ...)
// come from this repository, not from a published version.
replace github.com/scale-dev/scale => ../..
