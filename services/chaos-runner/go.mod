module github.com/scale-dev/scale/services/chaos-runner

go 1.26.8
