module github.com/ferry-dr/ferry

go 1.24

replace github.com/ferry-dr/ferry/sdk => ./sdk
