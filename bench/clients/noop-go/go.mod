module muster.dev/bench-noop

go 1.19

require muster.dev/muster v0.0.0

replace muster.dev/muster => ../../../clients/go
