package route

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/tinyedge/tinyedge/hub/message"
)

const sampleBody = `{"temp": 30.5, "hum": 40, "name": "dev1", "ok": true, "nothing": null,
 "arr": [1, 2, {"x": "y"}], "obj": {"a": {"b": "c"}}, "esc": "a\"b\u00e9", "dup": 1, "dup": 2}`

// sample is the message most cases run on: a module output message with a
// JSON body, application properties and system properties.
func sample() *message.Message {
	m := message.New([]byte(sampleBody))
	m.Properties["alert"] = "true"
	m.Properties["level"] = "3"
	m.Properties["Key1"] = "value1"
	m.Properties["x-custom"] = "v"
	m.Properties["a.b"] = "c"
	s := &m.System
	s.MessageID = "m1"
	s.CorrelationID = "c1"
	s.ConnectionDeviceID = "dev"
	s.ConnectionModuleID = "sensor"
	s.OutputName = "out1"
	s.ContentType = "application/json"
	s.ContentEncoding = "utf-8"
	s.EnqueuedTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	s.MessageSchema = "schema1"
	s.ComponentName = "comp"
	return m
}

func with(f func(m *message.Message)) *message.Message {
	m := sample()
	f(m)
	return m
}

// from returns a message with the given route source.
func from(source string) *message.Message {
	return with(func(m *message.Message) {
		m.System.ConnectionModuleID, m.System.OutputName = "", ""
		parts := strings.Split(strings.TrimPrefix(source, "/"), "/")
		switch {
		case source == "/twinChangeNotifications":
			m.Kind = message.TwinChange
		case len(parts) >= 3:
			m.System.ConnectionModuleID = parts[2]
			if len(parts) == 5 {
				m.System.OutputName = parts[4]
			}
		}
	})
}

func twin(body string) *message.Message {
	return with(func(m *message.Message) {
		m.Kind = message.TwinChange
		m.System.ConnectionModuleID, m.System.OutputName = "", ""
		m.Body = []byte(body)
	})
}

const twinBody = `{"properties": {"desired": {"x": 1, "obj": {"inner": null}, "$version": 4}}}`

func utf16Body(s string, bigEndian bool) []byte {
	var b []byte
	if bigEndian {
		b = append(b, 0xFE, 0xFF)
	}
	for _, u := range utf16.Encode([]rune(s)) {
		if bigEndian {
			b = append(b, byte(u>>8), byte(u))
		} else {
			b = append(b, byte(u), byte(u>>8))
		}
	}
	return b
}

func utf32Body(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8), byte(r>>16), byte(r>>24))
	}
	return b
}

func bodyMsg(ct, ce string, body []byte) *message.Message {
	return with(func(m *message.Message) {
		m.System.ContentType, m.System.ContentEncoding, m.Body = ct, ce, body
	})
}

type routeCase struct {
	name  string
	text  string
	msg   *message.Message // nil: sample()
	err   string           // Parse fails with exactly this error, or one containing it after "~"
	val   string           // Eval's value, as Value.String writes it; "" to skip
	match bool
	sink  string // Sink.String(); "" to skip
	cond  string // ConditionText(); "" to skip
}

func where(cond string) string { return "FROM /messages/* WHERE " + cond + " INTO $upstream" }

// ev is a condition evaluated on sample(); it matches when val is "true".
func ev(cond, val string) routeCase {
	return routeCase{name: cond, text: where(cond), val: val, match: val == "true"}
}

// evm is ev on another message.
func evm(name, cond string, m *message.Message, val string) routeCase {
	return routeCase{name: name + ": " + cond, text: where(cond), msg: m, val: val, match: val == "true"}
}

// bad is a route that does not parse.
func bad(text, err string) routeCase { return routeCase{name: text, text: text, err: err} }

// badc is a condition that does not parse; err is matched as a substring.
func badc(cond, err string) routeCase {
	return routeCase{name: cond, text: where(cond), err: "~" + err}
}

// src is a source matched against a message from source msgSource.
func src(source, msgSource string, match bool) routeCase {
	return routeCase{name: source + " vs " + msgSource, text: "FROM " + source + " INTO $upstream", msg: from(msgSource), match: match}
}

func sinkCase(text, sink string) routeCase {
	return routeCase{name: text, text: text, sink: sink, match: true}
}

var cases = []routeCase{
	// Parse errors, with the exact message.
	bad("", `route "r": column 1: expected SELECT or FROM, found end of input`),
	bad("   ", `route "r": column 4: expected SELECT or FROM, found end of input`),
	bad("FROM", `route "r": column 5: expected a source such as /messages/*, found end of input`),
	bad("FROM messages INTO $upstream", `route "r": column 6: expected a source such as /messages/*, found "messages"`),
	bad("FROM /messages/* WHERE alert = 'true' INT0 $upstream", `route "r": column 39: expected INTO, found "INT0"`),
	bad("FROM /messages WHERE 'é' = 'é' INT0 $upstream", `route "r": column 32: expected INTO, found "INT0"`),
	bad("FROM /* all */ /messages INTO $upstream", `route "r": column 9: expected WHERE or INTO, found "all"`),
	bad("SELECT FROM /messages INTO $upstream", `route "r": column 8: expected *, found "FROM"`),
	bad("SELECT * /messages INTO $upstream", `route "r": column 10: expected FROM, found "/"`),
	bad("TO /messages INTO $upstream", `route "r": column 1: expected SELECT or FROM, found "TO"`),
	bad("FROM /messages/ INTO $upstream", `route "r": column 16: expected a path segment after /, found " "`),
	bad("FROM /messages", `route "r": column 15: expected WHERE or INTO, found end of input`),
	bad("FROM /messages WHEN true INTO $upstream", `route "r": column 16: expected WHERE or INTO, found "WHEN"`),
	bad("FROM /messages INTO", `route "r": column 20: expected $upstream or BrokeredEndpoint("/modules/{module}/inputs/{input}"), found end of input`),
	bad("FROM /messages INTO $downstream", `route "r": column 21: unknown endpoint "$downstream" (want $upstream or BrokeredEndpoint("/modules/{module}/inputs/{input}"))`),
	bad("FROM /messages INTO Endpoint(\"x\")", `route "r": column 21: unknown endpoint "Endpoint" (want $upstream or BrokeredEndpoint("/modules/{module}/inputs/{input}"))`),
	bad(`FROM /messages INTO BrokeredEndpoint("/modules/a/outputs/b")`, `route "r": column 38: invalid BrokeredEndpoint address "/modules/a/outputs/b" (want "/modules/{module}/inputs/{input}")`),
	bad(`FROM /messages INTO BrokeredEndpoint("/modules//inputs/b")`, `route "r": column 38: invalid BrokeredEndpoint address "/modules//inputs/b" (want "/modules/{module}/inputs/{input}")`),
	bad(`FROM /messages INTO BrokeredEndpoint("/modules/a/inputs/")`, `route "r": column 38: invalid BrokeredEndpoint address "/modules/a/inputs/" (want "/modules/{module}/inputs/{input}")`),
	bad(`FROM /messages INTO BrokeredEndpoint("/modules/a/inputs/b/c")`, `route "r": column 38: invalid BrokeredEndpoint address "/modules/a/inputs/b/c" (want "/modules/{module}/inputs/{input}")`),
	bad(`FROM /messages INTO BrokeredEndpoint(/modules/a/inputs/b)`, `route "r": column 38: expected a string such as "/modules/{module}/inputs/{input}", found "/"`),
	bad(`FROM /messages INTO BrokeredEndpoint "/modules/a/inputs/b"`, `route "r": column 38: expected (, found "\"/modules/a/inputs/b\""`),
	bad(`FROM /messages INTO BrokeredEndpoint("/modules/a/inputs/b"`, `route "r": column 59: expected ), found end of input`),
	bad(`FROM /messages INTO BrokeredEndpoint("/modules/a/inputs/b`, `route "r": column 38: unterminated string`),
	bad("FROM /messages INTO $upstream garbage", `route "r": column 31: expected end of input, found "garbage"`),
	bad("FROM /messages INTO $upstream INTO $upstream", `route "r": column 31: expected end of input, found "INTO"`),
	bad("FROM /messages WHERE INTO $upstream", `route "r": column 22: expected a condition, found "INTO"`),
	bad("FROM /messages WHERE", `route "r": column 21: expected a condition, found end of input`),
	bad("FROM /messages WHERE a = '1'", `route "r": column 29: expected INTO, found end of input`),
	bad("FROM /messages WHERE a = 'x INTO $upstream", `route "r": column 26: unterminated string`),
	bad(`FROM /messages WHERE a = "x INTO $upstream`, `route "r": column 26: unterminated string`),
	bad("FROM /messages WHERE a = 'x' /* note INTO $upstream", `route "r": column 30: unterminated comment: /* without */`),
	bad("/* FROM /messages INTO $upstream", `route "r": column 1: unterminated comment: /* without */`),
	bad(`FROM /messages WHERE a = 'x\q' INTO $upstream`, `route "r": column 28: invalid escape \q in string (want \\ \' \" \/ \b \f \n \r \t or \uXXXX)`),
	bad(`FROM /messages WHERE a = '\u12G4' INTO $upstream`, `route "r": column 27: invalid escape: \u needs 4 hex digits`),
	bad("FROM /messages WHERE 1.2.3 = 1 INTO $upstream", `route "r": column 22: malformed number "1.2.3"`),
	bad("FROM /messages WHERE 0x1G = 1 INTO $upstream", `route "r": column 22: malformed number "0x1G"`),
	bad("FROM /messages WHERE 3-1 = 2 INTO $upstream", `route "r": column 22: malformed number "3-1" (put spaces around operators)`),
	bad("FROM /messages WHERE e5 = 1 INTO $upstream", `route "r": column 22: malformed number "e5": an exponent needs digits before it`),
	bad("FROM /messages WHERE 0x1FFFFFFFFFFFFFFFF = 1 INTO $upstream", `route "r": column 22: hex number 0x1FFFFFFFFFFFFFFFF does not fit in 64 bits`),
	bad("FROM /messages WHERE foo(1) INTO $upstream", `route "r": column 22: unknown function "foo"`),
	bad("FROM /messages WHERE abs(1, 2) = 1 INTO $upstream", `route "r": column 22: abs takes 1 argument, found 2`),
	bad("FROM /messages WHERE concat('a') = 'a' INTO $upstream", `route "r": column 22: concat takes 2 or more arguments, found 1`),
	bad("FROM /messages WHERE substring('a') = 'a' INTO $upstream", `route "r": column 22: substring takes 2 or 3 arguments, found 1`),
	bad("FROM /messages WHERE power(2) = 4 INTO $upstream", `route "r": column 22: power takes 2 arguments, found 1`),
	bad("FROM /messages WHERE length() = 0 INTO $upstream", `route "r": column 22: length takes 1 argument, found 0`),
	bad("FROM /messages WHERE temp > 25 INTO $upstream", `route "r": column 27: invalid operands to >: have string and number, want two operands of the same type; properties are strings, convert with as_number(temp)`),
	bad("FROM /messages WHERE 'a' + 1 = 2 INTO $upstream", `route "r": column 26: invalid operands to +: have string and number, want numbers`),
	bad("FROM /messages WHERE NOT alert = 'true' INTO $upstream", `route "r": column 22: invalid operand to NOT: have string, want bool (NOT binds tighter than comparisons: write NOT (a = b))`),
	bad("FROM /messages WHERE abs('x') = 1 INTO $upstream", `route "r": column 26: invalid argument 1 to abs: have string, want number`),
	bad("FROM /messages WHERE (1 = 1 INTO $upstream", `route "r": column 29: expected ), found "INTO"`),
	bad("FROM /messages WHERE 1 = 1) INTO $upstream", `route "r": column 27: expected INTO, found ")"`),
	bad("FROM /messages WHERE a == 'b' INTO $upstream", `route "r": column 25: expected a value, found "="`),
	bad("FROM /messages WHERE a = @ INTO $upstream", `route "r": column 26: expected a value, found "@"`),
	bad("FROM /messages WHERE a ? b INTO $upstream", `route "r": column 24: expected INTO, found "?"`),
	bad("FROM /messages WHERE {alert} = 'x' INTO $upstream", `route "r": column 23: expected a $property after {, found "alert"`),
	bad("FROM /messages WHERE {$messageId = 'x' INTO $upstream", `route "r": column 34: expected }, found "="`),
	bad("FROM /messages WHERE a[0] = 1 INTO $upstream", `route "r": column 22: expected a value, found "a[0]"`),
	bad("FROM /messages WHERE $foo = 'x' INTO $upstream", `route "r": column 22: unknown system property "$foo" (want one of $messageId, $correlationId, $userId, $to, $contentType, $contentEncoding, $creationTimeUtc, $expiryTimeUtc, $enqueuedTime, $connectionDeviceId, $connectionModuleId, $outputName, $inputName, $messageSchema, $interfaceId, $componentName, or $body)`),
	bad("FROM /messages WHERE abs(1 INTO $upstream", `route "r": column 28: expected , or ), found "INTO"`),
	bad("FROM /messages WHERE 3 $ 4 INTO $upstream", `route "r": column 24: expected INTO, found "$"`),

	// Errors matched by substring.
	bad("FROM /foo INTO $upstream", `~column 6: unknown source "/foo" (want /*, /messages/*`),
	bad("FROM /messages/modules/*/outputs/o INTO $upstream", `~column 24: invalid source "/messages/modules/*/outputs/o": * may only be the whole last path segment`),
	bad("FROM /messages/modules/filter* INTO $upstream", `~column 24: invalid source "/messages/modules/filter*"`),
	bad("FROM /messages/outputs/o INTO $upstream", `~unknown source "/messages/outputs/o"`),
	bad("FROM /twinChangeNotifications/x INTO $upstream", `~unknown source "/twinChangeNotifications/x"`),
	bad("FROM /messages/modules/m/inputs/i INTO $upstream", `~unknown source`),
	badc("-temp > 1", `column 24: ambiguous name "-temp": put spaces around operators and quotes`),
	badc("'a'||'b' = 'ab'", `ambiguous name "'a'||'b'"`),
	badc("a||b = 'ab'", `ambiguous name "a||b"`),
	badc("$body. = 1", `invalid $body query "$body.": the path is empty`),
	badc("$body.a[x] = 1", `invalid $body query "$body.a[x]": an array index is written name[0]`),
	badc("$body.a[1][2] = 1", `an array index is written name[0]`),
	badc("$body.a..b = 1", `invalid $body query "$body.a..b": every step needs a member name`),
	badc("$body.[0] = 1", `every step needs a member name`),
	badc("twin_change_includes(properties.desired.x)", `twin_change_includes can only be used in routes FROM /twinChangeNotifications`),
	bad("FROM /twinChangeNotifications WHERE twin_change_includes('properties.desired.x') INTO $upstream", `~column 58: twin_change_includes wants a twin path such as properties.desired.x`),
	bad("FROM /twinChangeNotifications WHERE twin_change_includes(foo.bar) INTO $upstream", `~invalid twin path "foo.bar": it must start with properties.reported., properties.desired. or tags.`),
	bad("FROM /twinChangeNotifications WHERE twin_change_includes(properties.) INTO $upstream", `~invalid twin path "properties."`),
	bad("FROM /twinChangeNotifications WHERE twin_change_includes(tags.a, tags.b) INTO $upstream", `~twin_change_includes takes 1 argument, found 2`),
	badc("true = 1", `invalid operands to =: have bool and number`),
	badc("undefined = 1", `invalid operands to =: have undefined and number`),
	badc("alert = undefined", `invalid operands to =: have string and undefined`),
	badc("alert ?? 1", `invalid operands to ??: have string and number`),
	badc("alert AND true", `invalid operands to AND: have string and bool`),
	badc("1 OR true", `invalid operands to OR: have number and bool`),
	badc("NOT undefined", `invalid operand to NOT: have undefined`),
	badc("- alert = 1", `invalid operand to unary -: have string, want number; properties are strings, convert with as_number(alert)`),
	badc("concat('a', 1) = 'a1'", `invalid argument 2 to concat: have number, want string`),
	badc("as_number(true) = 1", `invalid argument 1 to as_number: have bool, want string or number`),
	badc("length(null) = 0", `invalid argument 1 to length: have null, want string`),
	badc("lower(undefined) = 'a'", `invalid argument 1 to lower: have undefined, want string`),
	badc("substring('abc', '1') = 'bc'", `invalid argument 2 to substring: have string, want number`),
	badc("'a' || null = 'a'", `invalid operands to ||: have string and null, want strings`),
	badc("1 + true = 2", `invalid operands to +: have number and bool, want numbers`),
	badc("$body.temp = undefined", `invalid operands to =: have $body value and undefined`),

	// Sources.
	src("/*", "/messages", true),
	src("/*", "/messages/modules/sensor", true),
	src("/*", "/messages/modules/sensor/outputs/out1", true),
	src("/*", "/twinChangeNotifications", true),
	src("/messages/*", "/messages", true),
	src("/messages/*", "/messages/modules/sensor/outputs/out1", true),
	src("/messages/*", "/twinChangeNotifications", false),
	src("/messages", "/messages", true),
	src("/messages", "/messages/modules/sensor", true),
	src("/messages/modules/*", "/messages", false),
	src("/messages/modules/*", "/messages/modules/sensor", true),
	src("/messages/modules/*", "/messages/modules/sensor/outputs/out1", true),
	src("/messages/modules", "/messages/modules/sensor", true),
	src("/messages/modules/sensor/*", "/messages/modules/sensor/outputs/out1", true),
	src("/messages/modules/sensor/*", "/messages/modules/sensor", true),
	src("/messages/modules/sensor/*", "/messages/modules/sensorX/outputs/out1", false),
	src("/messages/modules/sensor/*", "/messages/modules/other/outputs/out1", false),
	src("/messages/modules/sensor/*", "/messages", false),
	src("/messages/modules/sensor", "/messages/modules/sensor/outputs/o1", true),
	src("/messages/modules/sensor", "/messages/modules/sensorX", false),
	src("/messages/modules/sensor/outputs/*", "/messages/modules/sensor/outputs/out1", true),
	src("/messages/modules/sensor/outputs/*", "/messages/modules/sensor", false),
	src("/messages/modules/sensor/outputs", "/messages/modules/sensor/outputs/out2", true),
	src("/messages/modules/sensor/outputs/out1", "/messages/modules/sensor/outputs/out1", true),
	src("/messages/modules/sensor/outputs/out1", "/messages/modules/sensor/outputs/out2", false),
	src("/messages/modules/sensor/outputs/out1", "/messages/modules/sensor/outputs/out10", false),
	src("/messages/modules/sensor/outputs/out1/*", "/messages/modules/sensor/outputs/out1", true),
	src("/twinChangeNotifications", "/twinChangeNotifications", true),
	src("/twinChangeNotifications", "/messages", false),
	src("/twinchangenotifications/*", "/twinChangeNotifications", true),
	src("/MESSAGES/Modules/SENSOR/*", "/messages/modules/sensor/outputs/out1", true),
	src("/messages/modules/Sensor/outputs/OUT1", "/messages/modules/sENSOR/outputs/out1", true),

	// Sinks, SELECT *, keyword case and comments.
	sinkCase("FROM /messages/* INTO $upstream", "$upstream"),
	sinkCase("FROM /messages/* INTO $UPSTREAM", "$upstream"),
	sinkCase(`FROM /messages/* INTO BrokeredEndpoint("/modules/filter/inputs/input1")`, `BrokeredEndpoint("/modules/filter/inputs/input1")`),
	sinkCase(`FROM /messages/* INTO brokeredendpoint('/modules/filter/inputs/input1')`, `BrokeredEndpoint("/modules/filter/inputs/input1")`),
	sinkCase(`FROM /messages/* INTO BrokeredEndpoint ( " modules/filter/inputs/input1/ " )`, `BrokeredEndpoint("/modules/filter/inputs/input1")`),
	sinkCase(`FROM /messages/* INTO BrokeredEndpoint("/Modules/filter/Inputs/in")`, `BrokeredEndpoint("/modules/filter/inputs/in")`),
	sinkCase("SELECT * FROM /messages/* INTO $upstream", "$upstream"),
	sinkCase("select * from /messages/* into $upstream", "$upstream"),
	{name: "select where", text: "Select * From /messages/* Where alert = 'true' Into $upstream", val: "true", match: true, cond: "alert = 'true'"},
	{name: "comments everywhere", text: "/* a */ SELECT /* b */ * /* c */ FROM /messages/* /* d */ WHERE /* e */ alert = /* f */ 'true' /* g */ INTO /* h */ $upstream /* i */", val: "true", match: true, cond: "alert = /* f */ 'true'"},
	{name: "multi-line", text: "FROM /messages/*\n\tWHERE alert = 'true'\n\tINTO $upstream\n", val: "true", match: true, cond: "alert = 'true'"},
	{name: "condition text", text: "FROM /messages/* WHERE   (level = '3')   INTO $upstream", val: "true", match: true, cond: "(level = '3')"},
	ev("alert = 'true' and level = '3'", "true"),
	ev("alert = 'true' AnD level = '3'", "true"),
	ev("false oR true", "true"),
	ev("nOt false", "true"),

	// Arithmetic, precedence and associativity.
	ev("1 + 2 = 3", "true"),
	ev("5 - 2 = 3", "true"),
	ev("2 * 3 = 6", "true"),
	ev("7 / 2 = 3.5", "true"),
	ev("7 % 4 = 3", "true"),
	ev("-7 % 4 = -3", "true"),
	ev("1 / 0 > 1e308", "true"),
	ev("- 1 / 0 < -1e308", "true"),
	ev("is_defined(3 % 0)", "false"),
	ev("is_defined(0 / 0)", "false"),
	ev("1 + 2 * 3 = 7", "true"),
	ev("(1 + 2) * 3 = 9", "true"),
	ev("10 - 4 - 3 = 3", "true"),
	ev("16 / 4 / 2 = 2", "true"),
	ev("2 * 3 % 4 = 2", "true"),
	ev("- 2 * 3 = -6", "true"),
	ev("-(2 + 3) = -5", "true"),
	ev("- - 2 = 2", "true"),
	ev("1 + 2 * 3", "7"),
	ev("1 < 2 = true", "true"),
	ev("true = 1 < 2", "true"),
	ev("false AND false OR true", "true"),
	ev("true OR true AND false", "true"),
	ev("NOT false AND false", "false"),
	ev("NOT (false AND false)", "true"),
	ev("alert = 'x' ?? true", "false"),
	ev("missing = 'x' ?? true", "true"),
	ev("(as_number('x') ?? 5) = 5", "true"),
	ev("'a' || 'b' = 'ab'", "true"),
	ev("'a' || alert = 'atrue'", "true"),
	ev("'a' || 'b' || 'c' = 'abc'", "true"),
	ev("is_defined('a' || missing)", "false"),

	// Comparisons.
	ev("1 < 2", "true"),
	ev("2 <= 2", "true"),
	ev("3 > 2", "true"),
	ev("2 >= 3", "false"),
	ev("1 = 1.0", "true"),
	ev("1 != 2", "true"),
	ev("1 <> 1", "false"),
	ev("'a' < 'b'", "true"),
	ev("'B' < 'a'", "true"),
	ev("'abc' >= 'abd'", "false"),
	ev("'\uffff' < '\U0001F600'", "false"),
	ev("alert = 'True'", "false"),
	ev("alert <> 'x'", "true"),
	ev("true = true", "true"),
	ev("true != false", "true"),
	ev("false < true", "true"),

	// Null.
	ev("null = null", "true"),
	ev("null <> null", "false"),
	ev("null < null", "false"),
	ev("null <= null", "true"),
	ev("null", "null"),
	ev("NOT null", "true"),
	ev("null AND true", "null"),
	ev("null OR true", "true"),
	ev("null OR false", "false"),
	ev("null OR null", "null"),

	// Undefined.
	ev("missing = 'x'", "undefined"),
	ev("missing <> 'x'", "undefined"),
	ev("missing < 'x'", "undefined"),
	ev("NOT (missing = 'x')", "undefined"),
	ev("true AND missing = 'x'", "undefined"),
	ev("false AND missing = 'x'", "false"),
	ev("missing = 'x' AND false", "false"),
	ev("true OR missing = 'x'", "true"),
	ev("false OR missing = 'x'", "undefined"),
	ev("missing = 'x' OR missing = 'y'", "undefined"),
	ev("undefined", "undefined"),
	ev("undefined AND false", "false"),
	ev("undefined OR true", "true"),
	ev("undefined < undefined", "undefined"),
	ev("undefined ?? undefined", "undefined"),
	ev("is_defined(missing)", "false"),
	ev("(missing ?? 'd') = 'd'", "true"),
	ev("(alert ?? 'd') = 'true'", "true"),
	ev("(missing ?? missing2 ?? 'd') = 'd'", "true"),
	ev("as_number(missing) + 1", "undefined"),
	ev("- as_number(missing)", "undefined"),
	ev("3", "3"),

	// Literals.
	ev("0x1F = 31", "true"),
	ev("0X1f = 31", "true"),
	ev("0xFFFFFFFFFFFFFFFF = -1", "true"),
	ev("1.5 = 3 / 2", "true"),
	ev("1e3 = 1000", "true"),
	ev(".5 = 0.5", "true"),
	ev("-.5 = -0.5", "true"),
	ev("1E-2 = 0.01", "true"),
	ev("2.5e+1 = 25", "true"),
	ev("-1 < 0", "true"),
	ev("1.5 * 2", "3"),
	ev("'abc'", "'abc'"),
	ev(`'it\'s' = "it's"`, "true"),
	ev(`"a\"b" = 'a"b'`, "true"),
	ev(`'it\'s'`, `'it\'s'`),
	ev(`'\u00e9' = 'é'`, "true"),
	ev(`'\\' = "\\"`, "true"),
	ev(`length('\\')`, "1"),
	ev(`'\/' = '/'`, "true"),
	ev(`'a\tb' = 'a	b'`, "true"),
	ev(`'\n' = '`+"\n"+`'`, "true"),
	ev(`length('\b\f\r')`, "3"),
	ev(`length('\uD83D\uDE00')`, "2"),
	ev(`'\uD83D\uDE00' = '😀'`, "true"),
	ev("true", "true"),
	ev("false", "false"),
	ev("TRUE = true", "true"),
	ev("False = FALSE", "true"),
	ev("Null = null", "true"),
	ev("UNDEFINED", "undefined"),
	ev("''", "''"),

	// Functions.
	ev("abs(-2.5) = 2.5", "true"),
	ev("ABS(2) = 2", "true"),
	ev("abs(as_number('x'))", "undefined"),
	ev("abs($body.name)", "undefined"),
	ev("exp(0) = 1", "true"),
	ev("exp(1000) = 1 / 0", "true"),
	ev("power(2, 10) = 1024", "true"),
	ev("power($body.temp, 2) = 930.25", "true"),
	ev("power(2, $body.name)", "undefined"),
	ev("square(-3) = 9", "true"),
	ev("ceiling(2.1) = 3", "true"),
	ev("ceiling(-2.1) = -2", "true"),
	ev("floor(-2.1) = -3", "true"),
	ev("floor(2.9) = 2", "true"),
	ev("sign(-5) = -1", "true"),
	ev("sign(0) = 0", "true"),
	ev("sign($body.temp) = 1", "true"),
	ev("sqrt(16) = 4", "true"),
	ev("is_defined(sqrt(-1))", "false"),
	ev("as_number(level) = 3", "true"),
	ev("as_number(' 1,234.5 ') = 1234.5", "true"),
	ev("as_number('1e3') = 1000", "true"),
	ev("as_number('(5)') = -5", "true"),
	ev("as_number('5-') = -5", "true"),
	ev("as_number('-Infinity') < -1e308", "true"),
	ev("is_defined(as_number('abc'))", "false"),
	ev("is_defined(as_number('NaN'))", "false"),
	ev("is_defined(as_number(''))", "false"),
	ev("as_number(3) = 3", "true"),
	ev("as_number($body.temp) = 30.5", "true"),
	ev("as_number($body.ok)", "undefined"),
	ev("is_bool(true)", "true"),
	ev("is_bool(alert)", "false"),
	ev("is_bool($body.ok)", "true"),
	ev("is_bool($body.temp)", "false"),
	ev("is_bool($body.obj)", "undefined"),
	ev("is_bool(missing = 'x')", "undefined"),
	ev("is_bool(1)", "false"),
	ev("is_bool(null)", "false"),
	ev("is_defined(alert)", "true"),
	ev("is_defined(null)", "true"),
	ev("is_defined(undefined)", "false"),
	ev("is_defined($body.nothing)", "true"),
	ev("is_defined($body.missing)", "true"),
	ev("is_defined($body.obj)", "false"),
	ev("is_null(null)", "true"),
	ev("is_null(alert)", "false"),
	ev("is_null(missing)", "false"),
	ev("is_null(1)", "false"),
	ev("is_null($body.nothing)", "true"),
	ev("is_null($body.temp)", "false"),
	ev("is_null($body.obj)", "undefined"),
	ev("is_number(1)", "true"),
	ev("is_number(1 / 0)", "false"),
	ev("is_number(level)", "false"),
	ev("is_number($body.temp)", "true"),
	ev("is_number($body.name)", "false"),
	ev("is_number(as_number('x'))", "false"),
	ev("is_string('a')", "true"),
	ev("is_string(alert)", "true"),
	ev("is_string(missing)", "false"),
	ev("is_string($body.name)", "true"),
	ev("is_string(1)", "false"),
	ev("concat('a', 'b', 'c') = 'abc'", "true"),
	ev("concat(alert, '!') = 'true!'", "true"),
	ev("is_defined(concat('a', missing))", "false"),
	ev("is_defined(concat('a', $body.temp))", "false"),
	ev("concat($body.name, '-', $connectionModuleId) = 'dev1-sensor'", "true"),
	ev("length('héllo') = 5", "true"),
	ev("length(alert) = 4", "true"),
	ev("length($body.name) = 4", "true"),
	ev("is_defined(length($body.temp))", "false"),
	ev("lower('ABC') = 'abc'", "true"),
	ev("upper(alert) = 'TRUE'", "true"),
	ev("is_defined(lower($body.temp))", "false"),
	ev("substring('abc', 1) = 'bc'", "true"),
	ev("substring('abc', 3) = ''", "true"),
	ev("is_defined(substring('abc', 4))", "false"),
	ev("is_defined(substring('abc', -1))", "false"),
	ev("substring('abc', 1, 1) = 'b'", "true"),
	ev("substring('abc', 1, 0) = ''", "true"),
	ev("is_defined(substring('abc', 1, 3))", "false"),
	ev("is_defined(substring('abc', 3, 0))", "false"),
	ev("substring('hello', 1.9, 2) = 'el'", "true"),
	ev("substring('h😀llo', 1, 2) = '😀'", "true"),
	ev("index_of('abcdef', 'cd') = 2", "true"),
	ev("index_of('abc', 'x') = -1", "true"),
	ev("index_of('😀ab', 'a') = 2", "true"),
	ev("index_of('abc', '') = 0", "true"),
	ev("starts_with(alert, 'tr')", "true"),
	ev("starts_with('abc', 'b')", "false"),
	ev("ends_with($connectionModuleId, 'sor')", "true"),
	ev("ends_with('abc', 'b')", "false"),
	ev("contains('abcdef', 'cde')", "true"),
	ev("contains('abc', 'x')", "false"),
	ev("contains($body.temp, '3')", "undefined"),
	ev("CONTAINS(Upper('abc'), 'B')", "true"),
	{name: "twin_change_includes", text: "FROM /twinChangeNotifications WHERE twin_change_includes(properties.desired.x) INTO $upstream", msg: twin(twinBody), val: "true", match: true},
	{name: "twin_change_includes object", text: "FROM /twinChangeNotifications WHERE TWIN_CHANGE_INCLUDES(properties.desired.obj) INTO $upstream", msg: twin(twinBody), val: "true", match: true},
	{name: "twin_change_includes null", text: "FROM /twinChangeNotifications WHERE twin_change_includes(properties.desired.obj.inner) INTO $upstream", msg: twin(twinBody), val: "true", match: true},
	{name: "twin_change_includes absent", text: "FROM /twinChangeNotifications WHERE twin_change_includes(properties.desired.y) INTO $upstream", msg: twin(twinBody), val: "false"},
	{name: "twin_change_includes reported", text: "FROM /twinChangeNotifications WHERE twin_change_includes(properties.reported.x) INTO $upstream", msg: twin(twinBody), val: "false"},
	{name: "twin_change_includes and", text: "FROM /twinChangeNotifications WHERE twin_change_includes(properties.desired.x) AND NOT twin_change_includes(tags.t) INTO $upstream", msg: twin(twinBody), val: "true", match: true},
	{name: "twin_change_includes not json", text: "FROM /twinChangeNotifications WHERE twin_change_includes(properties.desired.x) INTO $upstream", msg: with(func(m *message.Message) {
		m.Kind, m.Body, m.System.ContentType = message.TwinChange, []byte(twinBody), ""
	}), val: "undefined"},
	{name: "twin_change_includes device message", text: "FROM /twinChangeNotifications WHERE twin_change_includes(properties.desired.x) INTO $upstream", val: "false"},

	// System properties.
	ev("$messageId = 'm1'", "true"),
	ev("$MESSAGEID = 'm1'", "true"),
	ev("$correlationId = 'c1'", "true"),
	ev("$connectionDeviceId = 'dev'", "true"),
	ev("$connectionModuleId = 'sensor'", "true"),
	ev("$outputName = 'out1'", "true"),
	ev("$contentType = 'application/json'", "true"),
	ev("$contentEncoding = 'utf-8'", "true"),
	ev("$messageSchema = 'schema1'", "true"),
	ev("$componentName = 'comp'", "true"),
	ev("$enqueuedTime = '2024-01-02T03:04:05.000Z'", "true"),
	ev("$enqueuedTime > '2024-01-01'", "true"),
	ev("$userId", "undefined"),
	ev("is_defined($to)", "false"),
	ev("is_defined($inputName)", "false"),
	ev("is_defined($creationTimeUtc)", "false"),
	ev("as_number($connectionModuleId)", "undefined"),

	// Application properties, and $ names shadowed by them.
	ev("ALERT = 'true'", "true"),
	ev("key1 = 'value1'", "true"),
	ev("KEY1 = 'value1'", "true"),
	ev("x-custom = 'v'", "true"),
	ev("a.b = 'c'", "true"),
	ev("level", "'3'"),
	ev("abs = 'x'", "undefined"),
	evm("shadowed", "$messageId = 'app'", with(func(m *message.Message) { m.Properties["$messageId"] = "app" }), "true"),
	evm("shadowed any case", "$messageId = 'app'", with(func(m *message.Message) { m.Properties["$MessageID"] = "app" }), "true"),
	evm("escaped", "{$messageId} = 'm1'", with(func(m *message.Message) { m.Properties["$messageId"] = "app" }), "true"),
	evm("escaped spaced", "{ /* c */ $messageId } = 'm1'", with(func(m *message.Message) { m.Properties["$messageId"] = "app" }), "true"),
	evm("body shadowed", "$body.temp = 'hot'", with(func(m *message.Message) { m.Properties["$body.temp"] = "hot" }), "true"),
	evm("body escaped", "{$body.temp} = 30.5", with(func(m *message.Message) { m.Properties["$body.temp"] = "hot" }), "true"),
	evm("body index not shadowed", "$body.arr[0] = 1", with(func(m *message.Message) { m.Properties["$body.arr[0]"] = "x" }), "true"),
	evm("no properties", "alert = 'true'", with(func(m *message.Message) { m.Properties = nil }), "undefined"),
	evm("lower-case keys", "Alert = 'true'", with(func(m *message.Message) { m.Properties = map[string]string{"alert": "true"} }), "true"),
	evm("lower-case keys miss", "Alerts = 'true'", with(func(m *message.Message) { m.Properties = map[string]string{"alert": "true"} }), "undefined"),

	// $body.
	ev("$body.temp = 30.5", "true"),
	ev("$body.temp > 30", "true"),
	ev("$body.temp", "30.5"),
	ev("$body.hum = 40", "true"),
	ev("$body.name = 'dev1'", "true"),
	ev("$body.ok", "true"),
	ev("$BODY.ok", "true"),
	ev("$body.nothing", "null"),
	ev("$body.nothing = null", "true"),
	ev("$body.obj.a.b = 'c'", "true"),
	ev("$body.arr[1] = 2", "true"),
	ev("$body.arr[2].x = 'y'", "true"),
	ev("$body.arr[5]", "null"),
	ev("$body.arr", "undefined"),
	ev("$body.obj", "undefined"),
	ev("$body", "undefined"),
	ev("$body.esc = 'a\"bé'", "true"),
	ev("$body.dup = 2", "true"),
	ev("$body.TEMP = 30.5", "false"),
	ev("$body.missing", "null"),
	ev("$body.missing = null", "true"),
	ev("$body.missing > 3", "undefined"),
	ev("$body.temp > '30'", "undefined"),
	ev("$body.temp = '30.5'", "false"),
	ev("$body.temp != '30.5'", "true"),
	ev("$body.temp = $body.temp", "true"),
	ev("$body.ok = true", "true"),
	ev("$body.ok AND true", "true"),
	ev("$body.ok AND $body.temp > 30", "true"),
	ev("$body.name AND true", "undefined"),
	ev("false AND $body.name", "undefined"),
	ev("$body.ok OR $body.name", "undefined"),
	ev("NOT $body.ok", "false"),
	ev("NOT $body.nothing", "undefined"),
	ev("$body.temp + 1 = 31.5", "true"),
	ev("- $body.temp = -30.5", "true"),
	ev("$body.temp % 2 = 0.5", "true"),
	ev("$body.name || 'x' = 'dev1x'", "true"),
	ev("($body.missing ?? 'd') = null", "true"),
	ev("$body.temp > 30 AND alert = 'true'", "true"),
	evm("text/plain", "$body.temp = 30.5", bodyMsg("text/plain", "utf-8", []byte(sampleBody)), "undefined"),
	evm("charset parameter", "$body.temp = 30.5", bodyMsg("application/json; charset=utf-8", "utf-8", []byte(sampleBody)), "undefined"),
	evm("upper-case content type", "$body.temp = 30.5", bodyMsg("APPLICATION/JSON", "UTF-8", []byte(sampleBody)), "true"),
	evm("no encoding", "$body.temp = 30.5", bodyMsg("application/json", "", []byte(sampleBody)), "undefined"),
	evm("ascii encoding", "$body.temp = 30.5", bodyMsg("application/json", "ascii", []byte(sampleBody)), "undefined"),
	evm("no content type", "is_defined($body.temp)", bodyMsg("", "utf-8", []byte(sampleBody)), "false"),
	evm("utf-16", "$body.name = 'dev1' AND $body.esc = 'a\"bé'", bodyMsg("application/json", "utf-16", utf16Body(sampleBody, false)), "true"),
	evm("utf-16 big-endian", "$body.temp = 30.5", bodyMsg("application/json", "UTF-16", utf16Body(sampleBody, true)), "true"),
	evm("utf-16 emoji", "$body.e = '😀'", bodyMsg("application/json", "utf-16", utf16Body(`{"e":"😀"}`, false)), "true"),
	evm("utf-32", "$body.obj.a.b = 'c'", bodyMsg("application/json", "utf-32", utf32Body(sampleBody)), "true"),
	evm("utf-8 bom", "$body.temp = 30.5", bodyMsg("application/json", "utf-8", append([]byte("\xEF\xBB\xBF"), sampleBody...)), "true"),
	evm("invalid json", "is_defined($body.temp)", bodyMsg("application/json", "utf-8", []byte(`{"temp": 30.5`)), "false"),
	evm("trailing garbage", "is_defined($body.temp)", bodyMsg("application/json", "utf-8", []byte(`{"temp": 30.5} x`)), "false"),
	evm("top-level array", "is_defined($body.temp)", bodyMsg("application/json", "utf-8", []byte(`[{"temp": 30.5}]`)), "false"),
	evm("empty body", "is_defined($body.temp)", bodyMsg("application/json", "utf-8", nil), "false"),
	evm("escaped key", "$body.ab = 1", bodyMsg("application/json", "utf-8", []byte(`{"a\u0062": 1}`)), "true"),
	evm("big number", "$body.n > 1e300", bodyMsg("application/json", "utf-8", []byte(`{"n": 1e400}`)), "true"),
	evm("nested arrays", "$body.a[1].b[0] = 'z'", bodyMsg("application/json", "utf-8", []byte(`{"a":[{"b":[]},{"b":["z", "w"]}]}`)), "true"),
	evm("empty object", "$body.a", bodyMsg("application/json", "utf-8", []byte(`{}`)), "null"),
	evm("index into object", "$body.a[0]", bodyMsg("application/json", "utf-8", []byte(`{"a":{"0":1}}`)), "null"),
	evm("member of array", "$body.a.b", bodyMsg("application/json", "utf-8", []byte(`{"a":[{"b":1}]}`)), "null"),
}

func TestRoutes(t *testing.T) {
	if len(cases) < 170 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Parse("r", c.text)
			if c.err != "" {
				var se *SyntaxError
				if !errors.As(err, &se) {
					t.Fatalf("Parse(%q) = %v, want a *SyntaxError", c.text, err)
				}
				got := err.Error()
				if want, ok := strings.CutPrefix(c.err, "~"); ok {
					if !strings.Contains(got, want) {
						t.Fatalf("Parse(%q) error\n got %s\nwant it to contain %s", c.text, got, want)
					}
				} else if got != c.err {
					t.Fatalf("Parse(%q) error\n got %s\nwant %s", c.text, got, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", c.text, err)
			}
			m := c.msg
			if m == nil {
				m = sample()
			}
			env := NewEnv(m)
			if got := r.Match(&env); got != c.match {
				t.Errorf("Match = %v, want %v (value %v)", got, c.match, r.Eval(&env))
			}
			if c.val != "" {
				if got := r.Eval(&env).String(); got != c.val {
					t.Errorf("Eval = %s, want %s", got, c.val)
				}
			}
			if c.sink != "" {
				if got := r.Sink.String(); got != c.sink {
					t.Errorf("Sink = %s, want %s", got, c.sink)
				}
			}
			if c.cond != "" {
				if got := r.ConditionText(); got != c.cond {
					t.Errorf("ConditionText = %q, want %q", got, c.cond)
				}
			}
		})
	}
}

func TestRouteFields(t *testing.T) {
	r, err := Parse("alerts", "FROM /messages/modules/filter/outputs/* WHERE alert = 'true' INTO BrokeredEndpoint(\"/modules/m/inputs/i\")")
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "alerts" || r.Source != "/messages/modules/filter/outputs/*" || r.Priority != DefaultPriority || r.TimeToLive != 0 {
		t.Errorf("got Name %q Source %q Priority %d TimeToLive %v", r.Name, r.Source, r.Priority, r.TimeToLive)
	}
	if want := (Sink{Kind: ModuleInput, Module: "m", Input: "i"}); r.Sink != want {
		t.Errorf("Sink = %+v, want %+v", r.Sink, want)
	}
	if !r.HasCondition() || r.ConditionText() != "alert = 'true'" {
		t.Errorf("HasCondition %v, ConditionText %q", r.HasCondition(), r.ConditionText())
	}
	r, err = Parse("all", "FROM /* INTO $upstream")
	if err != nil {
		t.Fatal(err)
	}
	if r.HasCondition() || r.ConditionText() != "" || r.Eval(&Env{m: sample()}).String() != "true" {
		t.Errorf("a route without WHERE: HasCondition %v, ConditionText %q", r.HasCondition(), r.ConditionText())
	}
}

func TestMatchSource(t *testing.T) {
	r, err := Parse("r", "FROM /messages/modules/filter/* INTO $upstream")
	if err != nil {
		t.Fatal(err)
	}
	for source, want := range map[string]bool{
		"/messages/modules/filter":             true,
		"/messages/modules/filter/outputs/o1":  true,
		"/messages/modules/FILTER/outputs/o1":  true,
		"/messages/modules/filterX/outputs/o1": false,
		"/messages/modules/filte":              false,
		"/messages":                            false,
		"/twinChangeNotifications":             false,
	} {
		if got := r.MatchSource(source); got != want {
			t.Errorf("MatchSource(%q) = %v, want %v", source, got, want)
		}
	}
}

func TestEnvReset(t *testing.T) {
	r, err := Parse("r", where("$body.temp > 30"))
	if err != nil {
		t.Fatal(err)
	}
	env := NewEnv(sample())
	if !r.Match(&env) {
		t.Fatal("no match on the sample")
	}
	env.Reset(bodyMsg("application/json", "utf-8", []byte(`{"temp": 3}`)))
	if r.Match(&env) {
		t.Fatal("Reset kept the previous message's body")
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	for _, text := range []string{
		where("alert = 'true' AND $connectionModuleId = 'sensor'"),
		where("missing = 'x' OR NOT (level <> '3') AND as_number(level) > 2"),
		where("$body.temp > 30 AND $body.name = 'dev1'"),
		"FROM /messages/modules/sensor/outputs/* INTO $upstream",
	} {
		r, err := Parse("r", text)
		if err != nil {
			t.Fatal(err)
		}
		m := sample()
		allocs := testing.AllocsPerRun(100, func() {
			env := NewEnv(m)
			if !r.Match(&env) {
				t.Fatalf("%s: no match", text)
			}
		})
		if allocs != 0 && !(raceEnabled && strings.Contains(text, "$body")) {
			t.Errorf("%s: %v allocations per message", text, allocs)
		}
	}
}

func TestValueString(t *testing.T) {
	zero := 0.0
	for v, want := range map[Value]string{
		{}:                            "undefined",
		null:                          "null",
		boolValue(false):              "false",
		numberValue(3.5):              "3.5",
		numberValue(1e21):             "1e+21",
		numberValue(-0.25):            "-0.25",
		stringValue("a'b\\c\n\x01"):   `'a\'b\\c\n\u0001'`,
		numberValue(float64(1 << 53)): "9.007199254740992e+15",
		numberValue(-1 / zero):        "-Infinity",
		numberValue(1 / zero):         "Infinity",
		numberValue(zero / zero):      "undefined",
	} {
		if got := v.String(); got != want {
			t.Errorf("String() = %s, want %s", got, want)
		}
	}
}

// FuzzParse checks that Parse never panics, that its errors are
// *SyntaxError with a column inside the text (or just after it), and that
// a route that parses evaluates on a few messages without panicking.
func FuzzParse(f *testing.F) {
	for _, c := range cases {
		f.Add(c.text)
	}
	msgs := []*message.Message{
		sample(),
		twin(twinBody),
		bodyMsg("application/json", "utf-16", utf16Body(sampleBody, false)),
		bodyMsg("text/plain", "", []byte("not json")),
		with(func(m *message.Message) {
			m.Properties = map[string]string{"$body.temp": "x", "$messageId": "y", "a": "b"}
		}),
	}
	f.Fuzz(func(t *testing.T, text string) {
		r, err := Parse("fuzz", text)
		if err != nil {
			se, ok := err.(*SyntaxError)
			if !ok {
				t.Fatalf("Parse(%q) error %T %v, want *SyntaxError", text, err, err)
			}
			if n := len([]rune(text)); se.Column < 1 || se.Column > n+1 {
				t.Fatalf("Parse(%q): column %d outside 1..%d: %v", text, se.Column, n+1, err)
			}
			if se.Route != "fuzz" || se.Msg == "" {
				t.Fatalf("Parse(%q): %#v", text, se)
			}
			return
		}
		_ = r.Sink.String()
		_ = r.ConditionText()
		for _, m := range msgs {
			env := NewEnv(m)
			_ = r.Match(&env)
			_ = r.Eval(&env).String()
		}
	})
}

func BenchmarkMatchProperty(b *testing.B) {
	r, err := Parse("r", where("alert = 'true' AND $connectionModuleId = 'sensor'"))
	if err != nil {
		b.Fatal(err)
	}
	m := sample()
	b.ReportAllocs()
	for b.Loop() {
		env := NewEnv(m)
		if !r.Match(&env) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkMatchBody(b *testing.B) {
	r, err := Parse("r", where("$body.temp > 30 AND $body.name = 'dev1'"))
	if err != nil {
		b.Fatal(err)
	}
	m := sample()
	b.ReportAllocs()
	for b.Loop() {
		env := NewEnv(m) // a new message: the body is checked again
		if !r.Match(&env) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkMatchPropertyOnly(b *testing.B) {
	r, err := Parse("r", where("alert = 'true'"))
	if err != nil {
		b.Fatal(err)
	}
	m := sample()
	b.ReportAllocs()
	for b.Loop() {
		env := NewEnv(m)
		if !r.Match(&env) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkMatchSourceOnly(b *testing.B) {
	r, err := Parse("r", "FROM /messages/modules/sensor/outputs/* INTO $upstream")
	if err != nil {
		b.Fatal(err)
	}
	m := sample()
	b.ReportAllocs()
	for b.Loop() {
		env := NewEnv(m)
		if !r.Match(&env) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkParse(b *testing.B) {
	text := where("alert = 'true' AND $connectionModuleId = 'sensor' AND as_number(level) > 2")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("r", text); err != nil {
			b.Fatal(err)
		}
	}
}
