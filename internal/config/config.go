// Package config fills a configuration struct from four sources, in
// increasing precedence: the values it already holds (the defaults), an
// optional YAML file, the environment and command-line flags.
//
// The struct describes itself: every exported field with a `yaml:"name"`
// tag is a setting, named name in the file, --name-with-dashes on the
// command line and PREFIX_NAME_IN_CAPITALS in the environment. A nested
// struct field is a group: its settings get the group's name as a prefix
// (`tls:` in the file, --tls-cert-file, PREFIX_TLS_CERT_FILE). A `help:"..."`
// tag is the flag's usage text; `secret:"true"` marks a value that Redacted
// hides. Fields tagged `yaml:"-"` or untagged are not settings.
//
// Supported field types: string, bool, the integer and float kinds,
// time.Duration and []string (comma-separated in flags and environment).
//
// The flags are pflag flags (--name, two dashes), so that dfsmrd parses its
// command line like the dfsmr CLI. Why not a configuration library (koanf,
// ff): they merge sources well but still want each flag defined by hand,
// and a new field of the server's configuration would then need a flag, an
// environment name and a documentation row kept in step with it; the walk
// here derives all of them from the struct, in fewer lines than that glue.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Redaction replaces a secret's value in Redacted.
const Redaction = "REDACTED"

var durationType = reflect.TypeFor[time.Duration]()

// setting is one leaf field of the struct.
type setting struct {
	index []int  // reflect field path from the root
	key   string // dotted YAML path, e.g. tls.cert_file
	flag  string // e.g. tls-cert-file
	env   string // e.g. DFSMR_TLS_CERT_FILE
	help  string
	typ   reflect.Type
}

// Binding ties a struct to the flags it defined on a FlagSet. Use it in
// three steps: Bind, FlagSet.Parse, Load.
type Binding struct {
	root     reflect.Value // the struct, addressable
	settings []setting
	// flags holds the raw values given on the command line, by flag name,
	// in the order seen (the last one wins).
	flags map[string]string
}

// Bind defines one flag on fs per setting of *dst (a pointer to a struct),
// with the value *dst holds now shown as the default, and returns the
// Binding that Load uses once fs is parsed. It panics if dst is not a
// pointer to a struct or a setting has an unsupported type: both are
// programming errors that every test run finds.
func Bind(fs *pflag.FlagSet, dst any, envPrefix string) *Binding {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("config: Bind needs a pointer to a struct, got %T", dst))
	}
	b := &Binding{root: rv.Elem(), flags: map[string]string{}}
	b.walk(rv.Elem().Type(), nil, "", "", envPrefix)
	for _, s := range b.settings {
		usage := s.help
		if usage == "" {
			usage = s.key
		}
		f := fs.VarPF(&flagValue{b: b, s: s, shown: format(b.root.FieldByIndex(s.index))}, s.flag, "", usage+" (env "+s.env+")")
		if s.typ.Kind() == reflect.Bool {
			f.NoOptDefVal = "true"
		}
	}
	return b
}

// flagValue records a setting's flag for Load, which applies it after the
// file and the environment.
type flagValue struct {
	b     *Binding
	s     setting
	shown string // the value before parsing: the default in the usage
}

func (v *flagValue) Set(raw string) error {
	if _, err := parse(v.s.typ, raw); err != nil {
		return err
	}
	v.b.flags[v.s.flag] = raw
	v.shown = raw
	return nil
}

func (v *flagValue) String() string { return v.shown }

// Type names the value in the usage: "--stop-timeout duration".
func (v *flagValue) Type() string {
	switch {
	case v.s.typ == durationType:
		return "duration"
	case v.s.typ.Kind() == reflect.Slice:
		return "strings"
	case v.s.typ.Kind() == reflect.String:
		return "string"
	}
	return v.s.typ.Kind().String()
}

func (b *Binding) walk(t reflect.Type, index []int, keyPrefix, flagPrefix, envPrefix string) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		key := keyPrefix + name
		flagName := flagPrefix + strings.ReplaceAll(name, "_", "-")
		env := envPrefix + "_" + strings.ToUpper(name)
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			b.walk(f.Type, idx, key+".", flagName+"-", env)
			continue
		}
		if !supported(f.Type) {
			panic(fmt.Sprintf("config: setting %s has unsupported type %s", key, f.Type))
		}
		b.settings = append(b.settings, setting{
			index: idx, key: key, flag: flagName, env: env,
			help: f.Tag.Get("help"), typ: f.Type,
		})
	}
}

func supported(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

// Load applies, over the values the struct holds, the YAML file (when file
// is not empty), then every variable lookupEnv finds, then the flags given
// on the command line. A key of the file that names no setting is an error
// with its line number; so is a value that does not parse, naming where it
// came from.
func (b *Binding) Load(file string, lookupEnv func(string) (string, bool)) error {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		if err := decodeYAML(data, b.root.Addr().Interface()); err != nil {
			return fmt.Errorf("config file %s: %w", file, err)
		}
	}
	for _, s := range b.settings {
		if v, ok := lookupEnv(s.env); ok {
			if err := b.set(s, v); err != nil {
				return fmt.Errorf("environment %s: %w", s.env, err)
			}
		}
	}
	for _, s := range b.settings {
		if v, ok := b.flags[s.flag]; ok {
			if err := b.set(s, v); err != nil {
				return fmt.Errorf("flag --%s: %w", s.flag, err)
			}
		}
	}
	return nil
}

func decodeYAML(data []byte, dst any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(dst)
	if errors.Is(err, io.EOF) { // an empty file sets nothing
		return nil
	}
	return err
}

func (b *Binding) set(s setting, raw string) error {
	v, err := parse(s.typ, raw)
	if err != nil {
		return err
	}
	b.root.FieldByIndex(s.index).Set(v)
	return nil
}

// parse reads raw as a value of type t.
func parse(t reflect.Type, raw string) (reflect.Value, error) {
	v := reflect.New(t).Elem()
	var err error
	switch {
	case t == durationType:
		var d time.Duration
		d, err = time.ParseDuration(raw)
		v.SetInt(int64(d))
	case t.Kind() == reflect.String:
		v.SetString(raw)
	case t.Kind() == reflect.Bool:
		var x bool
		x, err = strconv.ParseBool(raw)
		v.SetBool(x)
	case v.CanInt():
		var x int64
		x, err = strconv.ParseInt(raw, 10, t.Bits())
		v.SetInt(x)
	case v.CanUint():
		var x uint64
		x, err = strconv.ParseUint(raw, 10, t.Bits())
		v.SetUint(x)
	case v.CanFloat():
		var x float64
		x, err = strconv.ParseFloat(raw, t.Bits())
		v.SetFloat(x)
	case t.Kind() == reflect.Slice:
		var list []string
		for p := range strings.SplitSeq(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		v.Set(reflect.ValueOf(list).Convert(t))
	}
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) {
			err = ne.Err
		}
		return v, fmt.Errorf("%q is not a valid %s: %w", raw, t, err)
	}
	return v, nil
}

func format(v reflect.Value) string {
	if v.Type() == durationType {
		return time.Duration(v.Int()).String()
	}
	if v.Kind() == reflect.Slice {
		return strings.Join(v.Convert(reflect.TypeFor[[]string]()).Interface().([]string), ",")
	}
	return fmt.Sprint(v.Interface())
}

// Settings lists every setting as (file key, flag, environment variable,
// help), in field order: the reference table of an operator guide.
func (b *Binding) Settings() [][4]string {
	out := make([][4]string, len(b.settings))
	for i, s := range b.settings {
		out[i] = [4]string{s.key, "--" + s.flag, s.env, s.help}
	}
	return out
}

// Redacted returns the struct's settings as YAML, durations written the
// way they are read ("10s"), every non-empty setting tagged secret:"true"
// replaced by Redaction.
func (b *Binding) Redacted() ([]byte, error) {
	return yaml.Marshal(node(b.root))
}

// node builds the YAML document of a struct value's settings.
func node(v reflect.Value) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		fv := v.Field(i)
		var val *yaml.Node
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != durationType:
			val = node(fv)
		case f.Tag.Get("secret") == "true" && !fv.IsZero():
			val = scalar(Redaction)
		case f.Type.Kind() == reflect.Slice:
			val = &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
			for j := range fv.Len() {
				val.Content = append(val.Content, scalar(fv.Index(j).String()))
			}
		default:
			val = scalar(format(fv))
			if f.Type.Kind() != reflect.String {
				val.Tag = "" // numbers and booleans stay plain
				val.Style = 0
			}
		}
		m.Content = append(m.Content, scalar(name), val)
	}
	return m
}

func scalar(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}
