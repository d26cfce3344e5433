module muster.dev/muster

go 1.19
