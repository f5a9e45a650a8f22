package hub

// EnvError says which of a module's env settings (the deployment entry's
// "env") is wrong and why. Built-in modules return it from Run and from
// their CheckEnv functions, so `tinyedge check` can point at the
// manifest's JSON path of the setting.
type EnvError struct {
	Key string
	Err error
}

func (e *EnvError) Error() string { return "env " + e.Key + ": " + e.Err.Error() }

func (e *EnvError) Unwrap() error { return e.Err }

// MapEnv adapts a map to the Env lookup modules read settings with, for
// checking settings without a running module.
type MapEnv map[string]string

// Env returns the value of key.
func (m MapEnv) Env(key string) (string, bool) {
	v, ok := m[key]
	return v, ok
}

// PropertyError says which desired property of a module's twin is wrong
// and why; CheckDesired functions of built-in modules return it so
// `tinyedge check` can point at the property's JSON path.
type PropertyError struct {
	Name string
	Err  error
}

func (e *PropertyError) Error() string { return "desired property " + e.Name + ": " + e.Err.Error() }

func (e *PropertyError) Unwrap() error { return e.Err }
