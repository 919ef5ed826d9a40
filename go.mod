module github.com/scale-dev/scale

go 1.26.8

require gitlab.com/gomidi/midi/v2 v2.3.24
