package parley_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"parley"
)

// The README's example (compiled by go vet and go test; not run: it has no
// Output comment and needs the demo models).
func Example() {
	ctx := context.Background()
	rt, err := parley.NewRuntime(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()
	mt, err := parley.LoadModel(rt, "samples/support-bot/models/opus-mt-de-en.parley", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer mt.Close()
	r, err := mt.Translate(ctx, []string{"Wie sind Ihre Öffnungszeiten?"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	english, _ := r.Text(0, 0)

	llm, err := parley.LoadModel(rt, "samples/support-bot/models/support-llama.parley", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer llm.Close()
	chat, err := parley.NewChatSession(llm, "You are ...")
	if err != nil {
		log.Fatal(err)
	}
	defer chat.Close()
	if err := chat.Append(parley.RoleUser, english); err != nil {
		log.Fatal(err)
	}
	reply, err := chat.GenerateStream(ctx, nil, func(piece string) bool {
		fmt.Print(piece)
		return true // false ends the reply here
	})
	if errors.Is(err, parley.ErrCancelled) { // ctx ended, or chat.Cancel() from another goroutine
		return
	}
	_ = reply
}
