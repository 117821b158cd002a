// Command segment sends six calls through github.com/segmentio/analytics-go/v3, unchanged,
// then closes the client, which flushes.
//
// Usage: go run ./segment HOST_URL WRITE_KEY RUN_ID
//
// Prints one JSON line with the messageIds the SDK assigned (its Callback receives each
// message); exits 1 if the Callback reported a Failure.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/analytics-go/v3"
)

const sdk = "github.com/segmentio/analytics-go/v3"

// callback records what the SDK reports for each message, by the message's type.
type callback struct {
	mu         sync.Mutex
	messageIds map[string]string
	failures   []string
}

func (c *callback) Success(m analytics.Message)            { c.record(m, nil) }
func (c *callback) Failure(m analytics.Message, err error) { c.record(m, err) }

func (c *callback) record(m analytics.Message, err error) {
	kind, id := typeAndID(m)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.messageIds[kind] = id
	if err != nil {
		c.failures = append(c.failures, fmt.Sprintf("%s: %v", kind, err))
	}
}

func typeAndID(m analytics.Message) (string, string) {
	switch m := m.(type) {
	case analytics.Track:
		return m.Type, m.MessageId
	case analytics.Identify:
		return m.Type, m.MessageId
	case analytics.Page:
		return m.Type, m.MessageId
	case analytics.Screen:
		return m.Type, m.MessageId
	case analytics.Group:
		return m.Type, m.MessageId
	case analytics.Alias:
		return m.Type, m.MessageId
	}
	return fmt.Sprintf("%T", m), ""
}

// moduleVersion is the SDK's module version as built (its Version constant lags behind).
func moduleVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == sdk {
				return strings.TrimPrefix(dep.Version, "v")
			}
		}
	}
	return "unknown"
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: segment HOST_URL WRITE_KEY RUN_ID")
	}
	host, writeKey, runID := os.Args[1], os.Args[2], os.Args[3]
	cb := &callback{messageIds: map[string]string{}}
	client, err := analytics.NewWithConfig(writeKey, analytics.Config{
		Endpoint: host,
		Interval: 100 * time.Millisecond,
		Callback: cb,
	})
	if err != nil {
		fail("config: %v", err)
	}

	userID := "user-" + runID
	for _, m := range []analytics.Message{
		analytics.Track{UserId: userID, Event: "Order Completed",
			Properties: analytics.Properties{"revenue": 19.99, "currency": "USD"}},
		analytics.Identify{UserId: userID, Traits: analytics.Traits{"email": "ada@example.com", "plan": "pro"}},
		analytics.Page{UserId: userID, Name: "Pricing", Properties: analytics.Properties{"path": "/pricing"}},
		analytics.Screen{UserId: userID, Name: "Home"},
		analytics.Group{UserId: userID, GroupId: "acme-" + runID, Traits: analytics.Traits{"name": "Acme"}},
		analytics.Alias{PreviousId: "anon-" + runID, UserId: userID},
	} {
		if err := client.Enqueue(m); err != nil {
			fail("enqueue %T: %v", m, err)
		}
	}
	if err := client.Close(); err != nil {
		fail("close: %v", err)
	}

	line, _ := json.Marshal(map[string]any{"sdk": sdk, "version": moduleVersion(), "messageIds": cb.messageIds})
	fmt.Println(string(line))
	if len(cb.failures) > 0 || len(cb.messageIds) != 6 {
		fail("delivery failed: %d of 6 calls reported; %s", len(cb.messageIds), strings.Join(cb.failures, "; "))
	}
}
