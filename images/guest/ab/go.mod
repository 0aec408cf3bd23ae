module bootmatrix.local/ab

go 1.24
